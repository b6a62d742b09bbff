"""What a stored request is: the settings a person asked for, and every run they make.

The app queues a `Request` in the run store (`JobQueue.submit`, jobs.py) and the runner reads it
back (`Request.from_stored`, runner.py). Two kinds:

- a comparison: NanoGPT and NanoKimi from one preset and one set of settings (compare.py);
- an ablation: the grid architecture × optimizer × seeds (ablation.py), one run per cell, each
  carrying its arm and seed as fields of its RunConfig.

Stored as JSON in the store's `config` column, in the same shape since the first release:
`{"request": {"kind", "preset", "data", "data_label", the settings as asked…}, "runs": [RunConfig
dicts]}`. Runs stored by older versions (optimizer settings as run fields, a grid's arm only in
its name) are read into today's configs.

Settings are any names of `settings.names(RunConfig)`; the configs validate them (SettingError,
in the engine's words). The only thing added here is the app's policy for a runner's threads.
"""

from dataclasses import dataclass, field, replace

from .ablation import ablation_runs, arm_name
from .compare import comparison_runs, preset
from .data import BUILTIN
from .metrics import usable_cores
from .optim import OPTIMIZER_LABELS
from .train import RunConfig

COMPARISON, ABLATION = "comparison", "ablation"
KINDS = (COMPARISON, ABLATION)


def training_threads(cores=None):
    """Threads for a run the app queues: every core but one, so the app's server stays responsive."""
    return max(1, (cores or usable_cores()) - 1)


def eval_schedule(preset_name, iters):
    """The preset's evaluation schedule, evaluating more often when there are few steps.

    At least ten evaluations per run, so a short run still draws a validation curve; at the
    presets' own iteration counts this is exactly the preset (every 100 steps).
    """
    base = preset(preset_name)
    return {"eval_interval": min(base.eval_interval, max(1, iters // 10)), "eval_iters": base.eval_iters}


@dataclass
class Request:
    kind: str                                   # COMPARISON or ABLATION
    runs: list                                  # validated RunConfigs, in the order they train
    data_label: str = "built-in corpus"         # how the training text is named in run lists
    asked: dict = field(default_factory=dict)   # the request as asked: preset, optimizers, seeds, settings

    def to_stored(self):
        request = {"kind": self.kind, "data": self.runs[0].data, "data_label": self.data_label, **self.asked}
        return {"request": request, "runs": [run.to_dict() for run in self.runs]}

    @classmethod
    def from_stored(cls, stored):
        request = dict(stored["request"])
        kind = request.pop("kind", COMPARISON)  # comparisons stored before grids existed have no kind
        runs = [RunConfig.from_dict(d) for d in stored["runs"]]
        if kind == ABLATION:  # grids stored before runs carried their arm
            runs = [run if run.arm else replace(run, arm=arm_name(run.model.ffn, run.optimizer.name)) for run in runs]
        request.pop("data", None)
        return cls(kind, runs, request.pop("data_label", ""), request)

    @property
    def arms(self):
        """A grid's arms in grid order ([] for a comparison)."""
        return list(dict.fromkeys(run.arm for run in self.runs if run.arm))

    def label(self):
        """One line for run lists."""
        first = self.runs[0]
        if self.kind == ABLATION:
            optimizers = dict.fromkeys(OPTIMIZER_LABELS[run.optimizer.name] for run in self.runs)
            return (f"ablation · {len(self.arms)} arms × {self.asked['seeds']} seed(s) · {', '.join(optimizers)} · "
                    f"{first.iters} iters · {self.data_label}")
        gpt, kimi = (OPTIMIZER_LABELS[run.optimizer.name] for run in self.runs[:2])
        return f"{self.asked['preset']} · NanoGPT {gpt} vs NanoKimi {kimi} · {first.iters} iters · {self.data_label}"


def comparison(preset_name="quick", gpt_optimizer="adamw", kimi_optimizer="truemuon", data=BUILTIN,
               data_label="built-in corpus", **settings):
    """A comparison as the app queues it; raises SettingError when the engine refuses the settings."""
    settings.setdefault("threads", training_threads())
    runs = comparison_runs(preset_name, gpt_optimizer, kimi_optimizer, data=data, **settings)
    asked = {"preset": preset_name, "gpt_optimizer": gpt_optimizer, "kimi_optimizer": kimi_optimizer, **settings}
    return Request(COMPARISON, runs, data_label, asked)


def ablation(seeds=3, optimizers=("adamw", "truemuon"), data=BUILTIN, data_label="built-in corpus", seed=1337,
             preset_name="quick", **settings):
    """An ablation grid as the app queues it, trained one run after the other, seed-major; each run
    is named "arm/sSEED" so its history and results row are told apart in the store. Raises
    SettingError when the engine refuses the settings."""
    settings.setdefault("threads", training_threads())
    runs = ablation_runs(tuple(optimizers), seeds, seed, data=data, preset_name=preset_name, **settings)
    runs = [replace(run, name=f"{run.arm}/s{run.seed}") for run in runs]
    asked = {"preset": preset_name, "seeds": seeds, "optimizers": list(optimizers), "seed": seed, **settings}
    return Request(ABLATION, runs, data_label, asked)
