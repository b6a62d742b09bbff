"""Grid-level progress on the terminal: how many runs are queued, running, done, failed or diverged,
on which node, and when the grid should end.

With one run at a time, cli.Progress's line per model says enough. With many runs in flight (a
grid with --jobs, or on a Ray cluster) lines per model scroll past unreadably, so this shows the
grid as a whole, drawn by `rich` (a kept library, rather than a hand-grown line printer): a summary
line with the ETA, a row per node, the runs in flight and the runs that went wrong. Where stderr is
not a terminal (a log file, CI), nothing is redrawn: one line per run as it starts and as it ends.

The ETA: the grid's elapsed time scaled by the share of its steps still to do (each run's share is
its step / iters; finished runs count whole), so it needs no model of the cluster.
"""

import sys
import threading
import time

from .guards import long_run_warning
from ..status import COMPLETED, DIVERGED, FAILED, STOPPED

QUEUED, RUNNING, REUSED = "queued", "running", "reused"
SHOWN_IN_FLIGHT = 12  # runs in flight listed by name; the rest are counted


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


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
        if not total or done <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (total - done) / done

    def counts_text(self):
        counts = self.counts()
        eta = self.eta()
        reused = sum(run["state"] == REUSED for run in self.runs.values())
        text = ", ".join(f"{n} {state}" + (f" ({reused} reused)" if state == "done" and reused else "")
                         for state, n in counts.items())
        return text + (f"; ETA {clock(eta)}" if eta is not None and counts[QUEUED] + counts[RUNNING] else "")

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            runs = {name: dict(run) for name, run in self.runs.items()}
            header = Text(f"{len(runs)} runs: {self.counts_text()}; elapsed {clock(time.monotonic() - self.started)}",
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
