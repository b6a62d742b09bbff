"""What a comparison is: NanoGPT against NanoKimi, two models built from one set of settings.

- The two architectures: NanoGPT is the dense feed-forward (Linear → ReLU → Linear), NanoKimi the
  Mixture-of-Experts of SwiGLU experts; everything else about them is shared.
- Presets are named `RunConfig`s: `seed` is the original script's configuration (every default of
  RunConfig, ModelConfig and OptimizerConfig), `quick` the same with fewer steps and smaller
  evaluations.
- `comparison_runs` turns a preset plus settings (any names from `settings.names(RunConfig)`) into
  the two validated RunConfigs; the dense model ignores the settings only the MoE has.

Training them is elsewhere: each run in its own worker process (worker.py), stored runs by the
app's runner (runner.py).
"""

from dataclasses import replace

from .data import load_corpus
from .model import ModelConfig
from .settings import Problems, apply, fields
from .train import RunConfig

# The two models of the comparison, by the key the CLI and the stored runs use.
ARCHITECTURES = {
    "nanogpt": ModelConfig(ffn="dense"),
    "nanokimi": ModelConfig(ffn="moe", experts=4),
}
MODEL_NAMES = {"nanogpt": "NanoGPT", "nanokimi": "NanoKimi"}
DEFAULT_OPTIMIZERS = {"nanogpt": "adamw", "nanokimi": "truemuon"}

PRESETS = {
    "seed": RunConfig(),  # the original script: 10,000 steps, evaluation every 100 on 200 batches per split
    "quick": RunConfig(iters=1000, eval_interval=100, eval_iters=20),
}
PRESET_HELP = {
    "seed": "the original script's configuration (10,000 iterations)",
    "quick": "1,000 iterations and smaller evaluations (about a minute on a laptop CPU)",
}
MOE_ONLY = tuple(f.name for f in fields(ModelConfig) if f.metadata["moe"])


def architecture(name, **overrides):
    """The model configuration of architecture `name` ("nanogpt" or "nanokimi"), fields overridden, validated."""
    return replace(ARCHITECTURES[name], **overrides).validate()


def as_architecture(model, name):
    """`model`'s shared settings on architecture `name`: the dense model keeps its own (default)
    values of the settings only the MoE has, so one set of settings describes both models."""
    arch = ARCHITECTURES[name]
    own = MOE_ONLY if arch.ffn == "dense" else ()
    return replace(model, ffn=arch.ffn, **{k: getattr(arch, k) for k in own})


def preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def comparison_runs(preset_name="seed", gpt_optimizer="adamw", kimi_optimizer="truemuon", data="builtin", **settings):
    """The two RunConfigs of a comparison, NanoGPT then NanoKimi, sharing every setting; validated
    together, so a setting both models refuse is named once. Raises SettingError."""
    base = apply(replace(preset(preset_name), data=data), **settings)
    runs = []
    for arch, optimizer in (("nanogpt", gpt_optimizer), ("nanokimi", kimi_optimizer)):
        runs.append(replace(base, name=MODEL_NAMES[arch], model=as_architecture(base.model, arch),
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

