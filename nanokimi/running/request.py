"""What a stored request is: the settings a person asked for, and every run they make.

The app queues a `Request` in the run store (`JobQueue.submit`, jobs.py) and the runner reads it
back (`Request.from_stored`, runner.py). Three kinds:

- a comparison: NanoGPT and NanoKimi from one preset and one set of settings (compare.py);
- an ablation: the grid of arms (architecture × optimizer) × seeds (ablation.py), one run per
  cell, each carrying its architecture, optimizer and seed as fields of its RunConfig;
- a sweep: the same grid with each arm at its own tuned learning rate (sweep.py). It has two
  phases and the second depends on the first, so it is stored with its tuning runs only; when
  they have trained, the runner chooses each arm's learning rate (sweep.choose) and stores the
  sweep again, `confirmed`: the choice in the request as `chosen` ({arm: learning rate}) and the
  confirmation runs, at the chosen and at the original learning rates, appended to its runs.

Stored as JSON in the store's `config` column, in the same shape since the first release:
`{"request": {"kind", "preset", "data", "data_label", the settings as asked…}, "runs": [RunConfig
dicts]}`. Runs stored by older versions reach `from_stored` already in today's shape (the store
reads them through migrate.py).

Settings are any names of `settings.names(RunConfig)`; the configs validate them (SettingError,
in the engine's words). The only thing added here is the app's policy for a runner's threads.
"""

from dataclasses import dataclass, field, replace

import torch

from ..experiments.ablation import ablation_runs, grid_arms
from ..experiments.arms import Arm
from ..experiments.compare import comparison_runs, preset
from ..training.data import BUILTIN
from ..metrics import threads_per_job, usable_cores
from ..training.model import LanguageModel
from ..training.optim import OPTIMIZER_LABELS
from ..settings import SettingError
from ..experiments.sweep import DEFAULT_FACTORS, confirmation_runs, learning_rate, tuned_setting, tuning_runs
from ..experiments.sweep import tuning_seeds as tuning_seed_numbers
from ..training.train import RunConfig

COMPARISON, ABLATION, SWEEP = "comparison", "ablation", "sweep"
GRIDS = (ABLATION, SWEEP)  # the kinds made of arms × seeds (the Ablation page shows both)
# What a grid or sweep asks for besides the settings of its runs.
GRID_ASKED = ("preset", "seeds", "architectures", "optimizers", "seed")
SWEEP_ASKED = GRID_ASKED + ("factors", "tuning_seeds", "chosen")


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
    kind: str                                   # COMPARISON, ABLATION or SWEEP
    runs: list                                  # validated RunConfigs, in the order they train
    data_label: str = "built-in corpus"         # how the training text is named in run lists
    asked: dict = field(default_factory=dict)   # the request as asked: preset, optimizers, seeds, settings

    def to_stored(self):
        request = {"kind": self.kind, "data": self.runs[0].data, "data_label": self.data_label, **self.asked}
        return {"request": request, "runs": [run.to_dict() for run in self.runs]}

    @classmethod
    def from_stored(cls, stored):
        request = dict(stored["request"])
        kind = request.pop("kind")
        runs = [RunConfig.from_dict(d) for d in stored["runs"]]
        request.pop("data", None)
        return cls(kind, runs, request.pop("data_label", ""), request)

    @property
    def arms(self):
        """A grid's arms in grid order ([] for a comparison)."""
        return list(dict.fromkeys(run.arm for run in self.runs if run.arm))

    # --- a sweep's two phases ---------------------------------------------------------------------

    @property
    def tuning(self):
        """A sweep's tuning runs: those on its tuning seeds (never a confirmation seed)."""
        seeds = set(tuning_seed_numbers(self.asked["seed"], self.asked["tuning_seeds"]))
        return [run for run in self.runs if run.seed in seeds]

    @property
    def chosen(self):
        """A sweep's learning rate per arm once tuning has chosen ({} until then)."""
        return self.asked.get("chosen") or {}

    def confirmation(self, chosen=None):
        """A sweep's confirmation runs, (at the chosen learning rates, at the original's), as
        grid.run_sweep trains them; `chosen` is {arm: learning rate} (default: the stored choice).
        An arm whose chosen rate is its original has the same runs in both lists."""
        chosen = self.chosen if chosen is None else chosen
        settings = {k: v for k, v in self.asked.items() if k not in SWEEP_ASKED}
        return confirmation_runs(grid_arms(self.asked["architectures"], self.asked["optimizers"]), chosen,
                                 self.asked["seeds"], self.asked["seed"], data=self.runs[0].data,
                                 preset_name=self.asked["preset"], **settings)

    def confirmed(self, choice):
        """This sweep after tuning: `choice` (sweep.choose) kept as `chosen`, the confirmation runs appended."""
        chosen = {arm: c["lr"] for arm, c in choice.items()}
        at_chosen, original = self.confirmation(chosen)
        runs = list({run.name: run for run in self.runs + at_chosen + original}.values())
        return Request(SWEEP, runs, self.data_label, {**self.asked, "chosen": chosen})

    def planned_runs(self):
        """How many runs this request trains in all: a sweep not yet confirmed counts its confirmation
        at most (both learning rates of every arm differ)."""
        if self.kind == SWEEP and not self.chosen:
            return len(self.runs) + 2 * len(self.arms) * self.asked["seeds"]
        return len(self.runs)

    def model_name(self, name):
        """A model of this request as a person reads it: a comparison's by its name ("NanoKimi"), a grid's
        by its arm and seed ("NanoKimi · TrueMuon · seed 1337"), a sweep's with its learning rate
        ("NanoGPT · AdamW · lr=0.003 · seed 101337"), read from the run's fields; a name that is no
        model of it as it is. Never the key the store uses ("nanogpt+adamw/lr=0.003/s101337")."""
        config = next((c for c in self.runs if c.name == name), None)
        if config is None or self.kind not in GRIDS or not config.architecture:
            return name
        lr = f" · {tuned_setting(config)}={learning_rate(config):.3g}" if self.kind == SWEEP else ""
        return f"{Arm.of(config).name}{lr} · seed {config.seed}"

    def label(self):
        """One line for run lists."""
        first = self.runs[0]
        optimizers = ", ".join(dict.fromkeys(OPTIMIZER_LABELS[run.optimizer.name] for run in self.runs))
        if self.kind == ABLATION:
            return (f"ablation · {len(self.arms)} arms × {self.asked['seeds']} seed(s) · {optimizers} · "
                    f"{first.iters} iters · {self.data_label}")
        if self.kind == SWEEP:
            return (f"sweep · {len(self.arms)} arms × {len(self.asked['factors'])} learning rates × "
                    f"{self.asked['tuning_seeds']} tuning seed(s), then {self.asked['seeds']} seed(s) · {optimizers} · "
                    f"{first.iters} iters · {self.data_label}")
        gpt, kimi = (OPTIMIZER_LABELS[run.optimizer.name] for run in self.runs[:2])
        return f"{self.asked['preset']} · NanoGPT {gpt} vs NanoKimi {kimi} · {first.iters} iters · {self.data_label}"


def comparison_jobs(cores=None):
    """How many models of a comparison the app trains at once: both where there are cores to share
    (4 or more: each gets half of training_threads()), else one after the other. On this 2-core VM
    both at once would take the core left to the server (README "Speed": compare --jobs)."""
    return 2 if (cores or usable_cores()) >= 4 else 1


def comparison(preset_name="quick", gpt_optimizer="adamw", kimi_optimizer="truemuon", data=BUILTIN,
               data_label="built-in corpus", **settings):
    """A comparison as the app queues it; raises SettingError when the engine refuses the settings."""
    jobs = comparison_jobs()
    settings.setdefault("threads", threads_per_job(jobs, training_threads()))
    runs = comparison_runs(preset_name, gpt_optimizer, kimi_optimizer, data=data, **settings)
    asked = {"preset": preset_name, "gpt_optimizer": gpt_optimizer, "kimi_optimizer": kimi_optimizer, **settings,
             "jobs": jobs}
    return Request(COMPARISON, runs, data_label, asked)


def ablation(seeds=3, optimizers=("adamw", "truemuon"), data=BUILTIN, data_label="built-in corpus", seed=1337,
             preset_name="quick", architectures=("nanogpt", "nanokimi"), **settings):
    """An ablation grid (architectures × optimizers) as the app queues it, trained one run after the
    other, seed-major; each run is named "arm/sSEED", so its history and results row are told apart
    in the store. Raises SettingError when the engine refuses the settings."""
    settings.setdefault("threads", training_threads())
    runs = ablation_runs(_arms(architectures, optimizers), seeds, seed, data=data, preset_name=preset_name,
                         **settings)
    asked = {"preset": preset_name, "seeds": seeds, "architectures": list(architectures),
             "optimizers": list(optimizers), "seed": seed, **settings}
    return Request(ABLATION, runs, data_label, asked)


def sweep(seeds=1, optimizers=("adamw", "truemuon"), data=BUILTIN, data_label="built-in corpus", seed=1337,
          preset_name="quick", architectures=("nanogpt", "nanokimi"), factors=DEFAULT_FACTORS, tuning_seeds=1,
          **settings):
    """A learning-rate sweep of the grid as the app queues it (sweep.py): its runs are the tuning runs,
    `factors` × each arm's original learning rate on `tuning_seeds` tuning seeds; the runner appends
    the confirmation on `seeds` seeds (`Request.confirmed`). Raises SettingError."""
    factors = [float(f) for f in factors]
    if not factors or min(factors) <= 0:
        raise SettingError([("factors", "choose at least one learning-rate factor, every one above 0")])
    if tuning_seeds < 1:
        raise SettingError([("tuning_seeds", f"tuning seeds must be at least 1, got {tuning_seeds}")])
    settings.setdefault("threads", training_threads())
    runs = tuning_runs(_arms(architectures, optimizers), factors, tuning_seeds, seed, data=data,
                       preset_name=preset_name, **settings)
    asked = {"preset": preset_name, "seeds": seeds, "architectures": list(architectures),
             "optimizers": list(optimizers), "seed": seed, "factors": factors, "tuning_seeds": tuning_seeds,
             **settings}
    return Request(SWEEP, runs, data_label, asked)


def _arms(architectures, optimizers):
    """The grid's arms; SettingError when either list is empty (ablation_runs would train its defaults)."""
    problems = [(name, f"choose at least one {name[:-1]}")
                for name, chosen in (("architectures", architectures), ("optimizers", optimizers)) if not chosen]
    if problems:
        raise SettingError(problems)
    return grid_arms(architectures, optimizers)


def arm_sizes(runs, vocab_size):
    """{arm: (parameters, active parameters)} of a grid's models (`runs`: its RunConfigs) on a text of
    `vocab_size` distinct characters, built on the meta device (nothing is allocated or initialised)."""
    sizes = {}
    with torch.device("meta"):
        for run in runs:
            if run.arm not in sizes:
                model = LanguageModel(replace(run.model, vocab_size=vocab_size))
                sizes[run.arm] = (model.num_params(), model.active_params())
    return sizes
