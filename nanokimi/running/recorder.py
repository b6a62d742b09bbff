"""The runner's record of a run while it trains: a worker's events become history rows and progress
in the store (store.py), written in short transactions at least every FLUSH_S.

The progress is what the app's live view reads (view.RunView, eta.time_left): which model it
follows, its step and phase, and per model what a live estimate needs.
"""

import statistics
import time

FLUSH_S = 0.5  # live history reaches the store at least this often (short write transactions)


class Recorder:
    """Turns a worker's events into store rows, written in short batches at least every FLUSH_S.

    The run's progress (one JSON object in the store) says which model it follows now, its step and
    its phase (train.PHASES, or "starting" while its worker process starts), and, per model that has
    started, what a live estimate needs: steps really run, training seconds (the training clock,
    evaluation excluded), evaluations and their seconds, and start-up seconds (worker start, loading,
    building: until its first evaluation). Steps are the ones really run, so a stopped, diverged or
    killed model never counts as trained to the end. Two models may train at once (a comparison on a
    machine with the cores, or a Ray cluster): everything is kept per model, the progress follows
    the model `begin` names, and "slots" counts the most models seen training at once.
    """

    def __init__(self, store, run_id, configs):
        self.store, self.run_id = store, run_id
        self.known = {c.name: c for c in configs}
        self.pending = []
        self.recent_ms = {}  # per model: its step times since its last evaluation
        self.clocks = {}     # per model: [when it began, when its current evaluation began]
        self.phases = {}     # per model: (phase, step)
        self.began = time.monotonic()
        self.last_flush = 0.0
        self.training = set()  # the models started and not done: more than one when they train together
        self.progress = {"index": 0, "model": configs[0].name, "step": 0, "phase": "starting", "phase_step": 0,
                         "models": {}, "slots": 1}

    def begin(self, index, config):
        """Follow `config` (the index-th of the run's models) from now on; it starts now unless it
        already started beside another."""
        self.known[config.name] = config
        self.began = time.monotonic()
        self.measured(config.name)
        self.progress.update(index=index, model=config.name)
        self.follow()
        self.flush()

    def measured(self, name):
        """The model's measurements, created when its first event (or `begin`) arrives."""
        models = self.progress["models"]
        if name not in models:
            models[name] = {"steps": 0, "train_s": 0.0, "evals": 0, "eval_s": 0.0, "startup_s": None}
            self.clocks[name] = [self.began, self.began]
            self.phases[name] = ("starting", 0)
        return models[name]

    def follow(self):
        name = self.progress["model"]
        if name in self.progress["models"]:
            phase, phase_step = self.phases[name]
            self.progress.update(step=self.progress["models"][name]["steps"], phase=phase, phase_step=phase_step)

    def point(self, event, metric, value):
        self.pending.append({"model": event["model"], "step": event["step"], "wall_time_s": event["wall_time_s"],
                             "train_flops": event.get("train_flops"), "metric": metric, "value": value})

    def __call__(self, event):
        kind, name = event["event"], event.get("model")
        if name is None:  # a backend's own event (e.g. where a Ray task was placed)
            return
        measured, clocks = self.measured(name), self.clocks[name]
        if kind == "done":
            self.training.discard(name)
        else:
            self.training.add(name)
            self.progress["slots"] = max(self.progress["slots"], len(self.training))
        if kind == "phase":
            self.phases[name] = (event["phase"], event["step"])
            if event["phase"] == "evaluating":
                clocks[1] = time.monotonic()
                if measured["startup_s"] is None:
                    measured["startup_s"] = clocks[1] - clocks[0]
        elif kind == "step":
            self.point(event, "train_loss", event["loss"])
            self.point(event, "ms_per_step", event["ms"])
            self.recent_ms.setdefault(name, []).append(event["ms"])
            measured.update(steps=event["step"], train_s=event["wall_time_s"])
        elif kind == "eval":
            measured["evals"] += 1
            measured["eval_s"] += time.monotonic() - clocks[1]
            self.point(event, "val_loss", event["val_loss"])
            self.point(event, "eval_train_loss", event["train_loss"])
            if event.get("rss_mb") is not None:
                self.point(event, "rss_mb", event["rss_mb"])
            recent_ms = self.recent_ms.pop(name, None)
            config = self.known.get(name)
            if recent_ms and config:  # live estimate from the sampled steps; the worker's exact figure replaces it
                tokens = config.batch_size * config.model.block_size
                self.point(event, "tokens_per_s", tokens / statistics.median(recent_ms) * 1000)
            measured.update(steps=event["step"], train_s=event["wall_time_s"])  # steps are sampled; evals are not
        elif kind == "done" and isinstance((event.get("results") or {}).get("steps"), int):
            measured["steps"] = event["results"]["steps"]
        self.follow()
        if kind != "step" or time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()

    def flush(self):
        self.store.record(self.run_id, self.pending, dict(self.progress))
        self.pending = []
        self.last_flush = time.monotonic()
