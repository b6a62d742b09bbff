"""What a comparison is: NanoGPT against NanoKimi, two models built from one set of settings.

- The models: NanoGPT and NanoKimi, with everything but their feed-forward shared, and the two
  controls between them: the architectures of the registry (arms.py), which also says how each is
  built from one set of settings.
- Presets are named `RunConfig`s: `seed` is the original script's configuration (every default of
  RunConfig, ModelConfig and OptimizerConfig), `quick` the same with fewer steps and smaller
  evaluations.
- `comparison_runs` turns a preset plus settings (any names from `settings.names(RunConfig)`) into
  the two validated RunConfigs; the dense model ignores the settings only the MoE has.

Training them is elsewhere: each run in its own worker process (worker.py), stored runs by the
app's runner (runner.py).
"""

from dataclasses import replace

from . import arms
from ..training.config import ModelConfig, RunConfig
from ..training.data import load_corpus
from ..settings import Problems, apply

COMPARISON = ("nanogpt", "nanokimi")  # the comparison's two models, in its order (arms.ARCHITECTURES keys)

PRESETS = {
    "seed": RunConfig(),  # the original script: 10,000 steps, evaluation every 100 on 200 batches per split
    "quick": RunConfig(iters=1000, eval_interval=100, eval_iters=20),
}
PRESET_HELP = {
    "seed": "the original script's configuration (10,000 iterations, evaluations on 200 batches per split)",
    "quick": "the original's model with 1,000 iterations and evaluations on 20 batches per split",
}


def architecture(name, **overrides):
    """The model configuration of architecture `name` (arms.ARCHITECTURES) with model settings
    overridden, validated."""
    return arms.get(name).build(replace(ModelConfig(), **overrides)).validate()


def preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def comparison_runs(preset_name="seed", gpt_optimizer="adamw", kimi_optimizer="truemuon", data="builtin", **settings):
    """The two RunConfigs of a comparison, NanoGPT then NanoKimi, sharing every setting; validated
    together, so a setting both models refuse is named once. Raises SettingError."""
    base = apply(replace(preset(preset_name), data=data), **settings)
    runs = []
    for key, optimizer in zip(COMPARISON, (gpt_optimizer, kimi_optimizer)):
        model = arms.get(key)
        runs.append(replace(base, name=model.short, architecture=key, model=model.build(base.model),
                            optimizer=replace(base.optimizer, name=optimizer)))
    validate_all(runs)
    return runs


def validate_all(runs):
    """Validate every run; one SettingError with each distinct problem once."""
    problems = Problems()
    for run in runs:
        problems.extend_from(run.validate)
    Problems(dict.fromkeys(problems)).raise_any()
    return runs


def check_data(runs):
    """Load the corpus once and check it fits every run; raises DataError with the reason."""
    corpus = load_corpus(runs[0].data)
    for run in runs:
        corpus.check(run.model.block_size)
    return corpus

