"""What a page shows of one run while it trains and once it has ended: `RunView` (the run, its
history and its place in the queue, read from the store by jobs.JobQueue.view) and the sentences of
its progress: the phase a model is in and how long the run has left (eta.time_left).
"""

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from ..status import ACTIVE, QUEUED
from .eta import clock, time_left
from .request import Request


@dataclass
class RunView:
    """What a page shows of one run, read from the store."""
    run: dict
    history: pd.DataFrame   # HISTORY_COLUMNS
    queue_position: int | None = None
    runner_starting: bool = False  # queued first with nothing training: the runner process is starting

    @property
    def id(self):
        return self.run["id"]

    @property
    def status(self):
        return self.run["status"]

    @property
    def active(self):
        return self.status in ACTIVE

    @property
    def results(self):
        return self.run["results"]

    @cached_property
    def request(self):
        return Request.from_stored(self.run["config"])

    @property
    def models(self):
        return [run.name for run in self.request.runs]

    def steps_run(self):
        """{model: steps it really ran} for every model of the run: a finished model's own count (a
        stopped, diverged or failed one's too), else the live count of the one training or killed;
        0 for a model that never started."""
        p = self.run["progress"]
        live = p.get("models", {})
        steps = {name: live.get(name, {}).get("steps", 0) for name in self.models}
        for row in self.results:
            if row.get("model") in steps and isinstance(row.get("steps"), int):
                steps[row["model"]] = row["steps"]
        return steps

    def progress(self):
        """(fraction of the planned steps really run, a line saying where the run is): "NanoKimi (2 of 2):
        training · step 120/1,000 · about 1:42 left" while it trains, "stopped: NanoGPT 1,000 of 1,000
        steps, NanoKimi 584 of 1,000" when it has ended."""
        runs = self.request.runs
        # a sweep's confirmation runs are stored once tuning has chosen: counted before that at most
        iters = [run.iters for run in runs] + [runs[0].iters] * (self.request.planned_runs() - len(runs))
        total = sum(iters)
        if self.status == QUEUED:
            if self.runner_starting:  # ~7 s on a 2-core machine, most of it importing torch
                return 0.0, "Starting the runner…"
            where = f" at position {self.queue_position}" if self.queue_position else ""
            return 0.0, f"Waiting in the queue{where}"
        steps = self.steps_run()
        done = sum(steps.values())
        fraction = min(1.0, done / total)
        shown = self.request.model_name  # a person reads "NanoGPT · AdamW · seed 1337", not the stored key
        if not self.active:
            if len(runs) <= 4:
                each = ", ".join(f"{shown(name)} {steps[name]:,} of {run.iters:,} steps" for name, run in zip(self.models, runs))
            else:
                trained = sum(1 for name, run in zip(self.models, runs) if steps[name] >= run.iters)
                each = f"{done:,} of {total:,} steps ({trained} of {len(iters)} models trained to the end)"
            return fraction, f"{self.status}: {each}"
        p = self.run["progress"]
        index = p.get("index", 0)
        model = shown(p.get("model", self.models[0]))
        of = f" ({index + 1} of {len(iters)})" if len(iters) > 1 else ""
        text = f"{model}{of}: {phase_text(p.get('phase'), p.get('phase_step', 0))} · step {p.get('step', 0):,}/{iters[index]:,}"
        return fraction, f"{text} · {eta_text(runs, p, self.request.planned_runs() - len(runs), shown)}"


PHASE_TEXT = {"starting": "starting its process", "loading": "loading the corpus", "building": "building the model",
              "evaluating": "evaluating", "training": "training", "measuring": "measuring inference speed",
              "saving": "saving the weights"}


def phase_text(phase, step=0):
    """A phase (train.PHASES, or the runner's "starting") as the live view says it: "evaluating (step 500)"."""
    if phase == "evaluating":
        return "evaluating step 0" if step == 0 else f"evaluating (step {step:,})"
    return PHASE_TEXT.get(phase, "starting")


def eta_text(runs, progress, unplanned=0, shown=str):
    """The live view's estimate (time_left): "about 1:42 left"; "about 0:42 left for NanoGPT; NanoKimi's
    after its first steps"; "time left after the first steps". `unplanned` runs (a sweep's
    confirmation, not chosen yet) are counted among those not timed; `shown` names a model for reading
    (Request.model_name)."""
    seconds, unknown = time_left(runs, progress)
    index = progress.get("index", 0)
    if runs[index].name in unknown:
        return "time left after the first steps"
    untimed = len(unknown) + unplanned
    if not untimed:
        return f"about {clock(seconds)} left"
    timed = [run.name for run in runs[index:] if run.name not in unknown]
    timed_text = shown(timed[0]) if len(timed) == 1 else f"the {len(timed)} models timed so far"
    rest = f"{shown(unknown[0])}'s after its first steps" if untimed == 1 and unknown else \
        f"the other {untimed} models' after their first steps"
    return f"about {clock(seconds)} left for {timed_text}; {rest}"
