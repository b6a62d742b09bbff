"""The `local` backend: a grid's runs in worker processes on this machine, `jobs` at a time
(worker.run_many), each result tagged with this host's name (backends.py has the interface)."""

import socket

from .worker import run_many


class LocalBackend:
    """Worker processes on this machine, `jobs` at a time (worker.run_many)."""

    name = "local"

    def __init__(self, jobs=1):
        self.jobs = jobs
        self.node = socket.gethostname()

    def run(self, runs, on_event=None, on_result=None, should_stop=None):
        def tagged(event):
            on_event({**event, "node": self.node})

        def finished(result):
            result.results["node"] = self.node
            if on_result:
                on_result(result)

        results = run_many(runs, on_event=tagged if on_event else None, should_stop=should_stop, jobs=self.jobs,
                           on_result=finished)
        for result in results:
            result.results["node"] = self.node
        return results

    def close(self):
        pass
