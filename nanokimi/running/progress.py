"""Progress on the terminal, drawn by `rich` (a kept library, rather than a hand-grown line printer).

- `ModelProgress`, with one model or two training at a time (compare, a grid with one job): a row
  per model with its bar, step, training loss, validation loss and time left, or how it ended.
- `GridProgress`, with many runs in flight (a grid with --jobs, or on a Ray cluster), where rows
  per model would scroll past unreadably: the grid as a whole, how many runs are queued, running,
  done, failed or diverged, on which node, the runs in flight and the runs that went wrong, and
  when the grid should end.

On a terminal both redraw in place. Where stderr is not a terminal (a log file, CI) nothing is
redrawn: ModelProgress prints a model's row at each evaluation and at its end, GridProgress one
line per run as it starts and as it ends.

The time left is eta.py's `extrapolate`: for a model, the time since its first training step scaled
by the steps still to do ('-:--' until a step is timed); for a grid, its elapsed time scaled by the
share of its steps still to do (each run's share is its step / iters; finished runs count whole).
"""

import sys
import threading
import time

from .guards import long_run_warning
from ..status import COMPLETED, DIVERGED, FAILED, STOPPED
from .eta import clock as clock_text, extrapolate

QUEUED, RUNNING, REUSED = "queued", "running", "reused"
SHOWN_IN_FLIGHT = 12  # runs in flight listed by name; the rest are counted
BAR_WIDTH = 24        # a model's bar, at most


class ModelProgress:
    """An on_event showing a row per model: `with ModelProgress() as progress: backend.run(runs, on_event=progress)`.
    `clock` is what the time left is measured with (a test passes its own). A model with more than a
    day left, judged WARN_AFTER_S after its first step, gets a warning line."""

    WARN_AFTER_S = 5.0

    def __init__(self, stream=None, redraw=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if redraw is None else redraw
        self.clock = clock
        self.models = {}  # model -> its row: step, iters, loss, val, first (when its first step came, that step), ended
        self.lock = threading.Lock()  # two models' events (--jobs 2) and rich's refresh thread
        self.console = None
        self.live = None
        self.warned = set()  # models whose time left was judged (guards.long_run_warning)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.stop()
            self.live = None

    def __call__(self, event):
        model = event["model"] if "seed" not in event else f"{event['model']} seed {event['seed']}"
        kind = event["event"]
        if kind not in ("start", "step", "eval", "done"):  # phases: the row shows steps
            return
        if kind == "start":
            with self.lock:
                self.models[model] = {**_model_row(), "iters": event["iters"]}
            self._print(f"{model}: {event['params']:,} parameters on {event['device']} ({event['threads']} threads)")
            return
        with self.lock:
            row = self.models.setdefault(model, _model_row())
            if kind == "eval":
                row["val"] = event["val_loss"]
            if kind == "step" and row["first"] is None:
                row["first"] = (self.clock(), event["step"])
            if kind in ("step", "eval"):
                row.update(step=event["step"], iters=event["iters"])
                if "loss" in event:
                    row["loss"] = event["loss"]
            if kind == "done":
                row["step"] = event["results"].get("steps", row["step"])  # step events are sampled
                row["ended"] = event["status"] + (f": {event['message']}" if event["message"] else "")
            row = dict(row)
        if kind == "step":
            self._warn_if_long(model, row)
        if self.tty:
            self._show()
        elif kind in ("eval", "done"):
            self._print(self._table({model: row}))

    def time_left(self, row):
        """Seconds until the model's last step, at the pace of its steps since its first; None before one."""
        since, first = row["first"] or (None, row["step"])
        return extrapolate(self.clock() - since, row["step"] - first, row["iters"] - row["step"]) \
            if row["step"] > first else None

    def _warn_if_long(self, model, row):
        """Once per model, WARN_AFTER_S after its first step (the first steps are slower): a line if it
        has more than a day left (guards.long_run_warning)."""
        if model in self.warned or row["first"] is None or self.clock() - row["first"][0] < self.WARN_AFTER_S:
            return
        self.warned.add(model)
        warning = long_run_warning(model, self.time_left(row))
        if warning:
            from rich.text import Text

            self._print(Text(warning))

    def _console(self):
        if self.console is None:
            from rich.console import Console

            # A log line is never wrapped: the width of a terminal only where there is one.
            self.console = Console(file=self.stream, width=None if self.tty else 1000, highlight=False)
        return self.console

    def _show(self):
        if self.live is None:
            from rich.live import Live

            self.live = Live(self, console=self._console(), refresh_per_second=4, transient=False)
            self.live.start()
        self.live.refresh()

    def _print(self, renderable):
        (self.live.console if self.live else self._console()).print(renderable)

    def __rich__(self):
        with self.lock:
            rows = {model: dict(row) for model, row in self.models.items()}
        return self._table(rows)

    def _table(self, rows):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)  # the model
        table.add_column(min_width=4, max_width=BAR_WIDTH)  # the bar: a narrow terminal narrows it
        for _ in range(3):  # steps, training loss, validation loss
            table.add_column(no_wrap=True)
        table.add_column()  # the time left, or how the model ended (a failure's message may be long)
        for model, row in rows.items():
            step, iters = row["step"], row["iters"] or row["step"] or 1
            bar = ProgressBar(total=iters, completed=min(step, iters), width=None)
            val = f"val {row['val']:.4f}" if row["val"] is not None else ""
            if row["ended"] is not None:
                table.add_row(f"{model:<9}", bar, f"{step:>6} steps", "", val, row["ended"])
                continue
            loss = f"loss {row['loss']:.4f}" if row["loss"] is not None else "loss   -   "
            # a countdown, as a clock shows one: whole seconds, rounded down
            left = self.time_left(row)
            eta = f"ETA {clock_text(int(left))}" if left is not None else "ETA  -:--"
            table.add_row(f"{model:<9}", bar, f"{step:>6}/{iters:<6}", loss, val, eta)
        return table


def _model_row():
    return {"step": 0, "iters": 0, "loss": None, "val": None, "first": None, "ended": None}


class GridProgress:
    """An on_event for a backend: `with GridProgress(runs) as progress: backend.run(runs, on_event=progress)`.
    A grid with more than a day left, judged WARN_AFTER_S after it started, gets a warning line."""

    WARN_AFTER_S = 10.0

    def __init__(self, runs, stream=None, redraw=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if redraw is None else redraw
        self.runs = {run.name: _queued(run.iters) for run in runs}
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.live = None
        self.warned = False  # the grid's time left judged once (guards.long_run_warning)

    def __enter__(self):
        if self.tty and self.runs:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self, console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.stop()
            self.live = None

    # --- events ------------------------------------------------------------------------------------------

    def __call__(self, event):
        with self.lock:
            run = self.runs.get(event.get("model"))
            if run is None and "iters" in event:  # a run the grid did not know of at the start (a sweep's confirmation)
                run = self.runs[event["model"]] = _queued(event["iters"])
            if run is None:
                return
            kind = event["event"]
            if event.get("node"):
                run["node"] = event["node"]
            if kind == "reused":  # kept in --out/runs by an earlier (or another) process: not trained here
                run["state"], run["step"] = REUSED, run["iters"]
                self._line(f"reused   {event['model']}  [{self.counts_text()}]")
            elif kind in ("placed", "start") and run["state"] == QUEUED:
                run["state"] = RUNNING
                self._line(f"started  {event['model']}" + (f" on {short(run['node'])}" if run["node"] else ""))
            elif kind == "step":
                run["step"], run["loss"] = event["step"], event.get("loss")
                self._warn_if_long()
            elif kind == "eval":
                run["step"], run["val"] = event["step"], event["val_loss"]
            elif kind == "done":
                run["state"] = event["status"]
                run["step"] = event["results"].get("steps", run["step"]) or run["step"]
                run["message"] = event.get("message", "")
                val = event["results"].get("final_val_loss")
                text = f"{event['status']:<9} {event['model']}" + (f" on {short(run['node'])}" if run["node"] else "")
                if isinstance(val, float) and val == val:
                    text += f"  val {val:.4f}"
                if run["message"]:
                    text += f": {run['message']}"
                self._line(f"{text}  [{self.counts_text()}]")

    def _line(self, text):
        if not self.tty:
            print(text, file=self.stream, flush=True)

    def _warn_if_long(self):
        """Once, after WARN_AFTER_S: a line if the grid has more than a day left (guards.long_run_warning)."""
        if self.warned or time.monotonic() - self.started < self.WARN_AFTER_S:
            return
        self.warned = True
        warning = long_run_warning("the grid", self.eta())
        if warning and self.live:
            self.live.console.print(warning, markup=False, highlight=False)
        elif warning:
            print(warning, file=self.stream, flush=True)

    # --- what is shown -------------------------------------------------------------------------------------

    def counts(self):
        """Runs per state; a reused run (trained before, kept in --out/runs) is done."""
        counts = {QUEUED: 0, RUNNING: 0, "done": 0, FAILED: 0, DIVERGED: 0}
        for run in self.runs.values():
            state = "done" if run["state"] in (COMPLETED, STOPPED, REUSED) else run["state"]
            counts[state] = counts.get(state, 0) + 1
        return counts

    def eta(self):
        """Seconds left, from the share of all steps done so far; None before any step. Reused runs
        took no time here: they count neither as work done nor as work to do."""
        trained = [r for r in self.runs.values() if r["state"] != REUSED]
        total = len(trained)
        done = sum(1.0 if r["state"] not in (QUEUED, RUNNING) else min(1.0, r["step"] / max(1, r["iters"]))
                   for r in trained)
        return extrapolate(time.monotonic() - self.started, done, total - done)

    def counts_text(self):
        counts = self.counts()
        eta = self.eta()
        reused = sum(run["state"] == REUSED for run in self.runs.values())
        text = ", ".join(f"{n} {state}" + (f" ({reused} reused)" if state == "done" and reused else "")
                         for state, n in counts.items())
        return text + (f"; ETA {clock_text(eta)}" if eta is not None and counts[QUEUED] + counts[RUNNING] else "")

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            runs = {name: dict(run) for name, run in self.runs.items()}
            header = Text(f"{len(runs)} runs: {self.counts_text()}; elapsed {clock_text(time.monotonic() - self.started)}",
                          style="bold")
        nodes = {}
        for run in runs.values():
            if run["node"]:
                row = nodes.setdefault(run["node"], {RUNNING: 0, "done": 0, FAILED: 0, DIVERGED: 0})
                state = "done" if run["state"] in (COMPLETED, STOPPED) else run["state"]
                if state in row:
                    row[state] += 1
        per_node = Table("node", "running", "done", "failed", "diverged", box=None, pad_edge=False)
        for node, row in sorted(nodes.items()):
            per_node.add_row(short(node), *(str(row[k]) for k in (RUNNING, "done", FAILED, DIVERGED)))
        in_flight = Table("run", "node", "step", "loss", "val", box=None, pad_edge=False)
        flying = [(name, run) for name, run in runs.items() if run["state"] == RUNNING]
        for name, run in flying[:SHOWN_IN_FLIGHT]:
            in_flight.add_row(name, short(run["node"]), f"{run['step']}/{run['iters']}",
                              f"{run['loss']:.4f}" if run["loss"] is not None else "-",
                              f"{run['val']:.4f}" if run["val"] is not None else "-")
        parts = [header, per_node, in_flight]
        if len(flying) > SHOWN_IN_FLIGHT:
            parts.append(Text(f"... and {len(flying) - SHOWN_IN_FLIGHT} more in flight"))
        for name, run in runs.items():
            if run["state"] in (FAILED, DIVERGED):
                parts.append(Text(f"{run['state']}: {name}: {run['message']}", style="red"))
        return Group(*parts)


def _queued(iters):
    return {"state": QUEUED, "step": 0, "iters": iters, "node": "", "loss": None, "val": None, "message": ""}


def short(node):
    """A node as shown: a Ray node id's first 8 hex digits, a host name whole."""
    return node[:8] if len(node) == 56 and all(c in "0123456789abcdef" for c in node) else node
