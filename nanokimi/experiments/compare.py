"""What a comparison is: NanoGPT against NanoKimi, two models built from one set of settings.

- The architectures: NanoGPT is the dense feed-forward (Linear → ReLU → Linear), NanoKimi the
  Mixture-of-Experts of SwiGLU experts; everything else about them is shared. NanoKimi differs
  from NanoGPT in three ways at once (size: 33% more parameters at the seed configuration;
  activation: SwiGLU against ReLU; routing: the gate), so two controls sit between them, each
  changing one: `relu-matched` (NanoGPT's ReLU MLP at NanoKimi's parameter count) and
  `swiglu-matched` (one SwiGLU at NanoKimi's parameter count: with dense routing NanoKimi computes
  a SwiGLU of width E·C whose hidden units the gate scales in blocks, so this is its experts fused
  without the gate, give or take the few units that stand for the gate's parameters: 258 hidden
  units against 4 × 64 at the seed configuration).
- Presets are named `RunConfig`s: `seed` is the original script's configuration (every default of
  RunConfig, ModelConfig and OptimizerConfig), `quick` the same with fewer steps and smaller
  evaluations.
- `comparison_runs` turns a preset plus settings (any names from `settings.names(RunConfig)`) into
  the two validated RunConfigs; the dense model ignores the settings only the MoE has.

Training them is elsewhere: each run in its own worker process (worker.py), stored runs by the
app's runner (runner.py).
"""

from dataclasses import replace

from ..training.data import load_corpus
from ..training.model import ModelConfig, ffn_params
from ..settings import Problems, SettingError, apply, fields
from ..training.train import RunConfig

# The models nanokimi trains, by the key the CLI, the grids and the stored runs use: the two of the
# comparison, and two controls that each change one thing on the way from NanoGPT to NanoKimi.
ARCHITECTURES = {
    "nanogpt": ModelConfig(ffn="dense"),          # ReLU MLP of width 4C
    "relu-matched": ModelConfig(ffn="dense"),     # ReLU MLP, its width matched to NanoKimi's parameter count
    "swiglu-matched": ModelConfig(ffn="swiglu"),  # one SwiGLU (NanoKimi's experts fused, no gate), matched likewise
    "nanokimi": ModelConfig(ffn="moe", experts=4),
}
ARCHITECTURE_LABELS = {
    "nanogpt": "NanoGPT (ReLU MLP)",
    "relu-matched": "ReLU MLP, NanoKimi's size",
    "swiglu-matched": "SwiGLU, NanoKimi's size",
    "nanokimi": "NanoKimi (MoE)",
}
MODEL_NAMES = {"nanogpt": "NanoGPT", "nanokimi": "NanoKimi"}

PRESETS = {
    "seed": RunConfig(),  # the original script: 10,000 steps, evaluation every 100 on 200 batches per split
    "quick": RunConfig(iters=1000, eval_interval=100, eval_iters=20),
}
PRESET_HELP = {
    "seed": "the original script's configuration (10,000 iterations, evaluations on 200 batches per split)",
    "quick": "the original's model with 1,000 iterations and evaluations on 20 batches per split",
}
MOE_ONLY = tuple(f.name for f in fields(ModelConfig) if f.metadata["moe"])


def architecture(name, **overrides):
    """The model configuration of architecture `name` with model settings overridden, validated."""
    return as_architecture(replace(ModelConfig(), **overrides), name).validate()


def as_architecture(model, name):
    """`model`'s shared settings on architecture `name`, so one set of settings describes every
    model of a comparison or grid. Models without experts keep the default values of the
    settings only the MoE has; the controls take the hidden width that matches the parameter
    count of NanoKimi built from the same settings."""
    if name not in ARCHITECTURES:
        raise SettingError([("architecture", f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")])
    arch = ARCHITECTURES[name]
    own = MOE_ONLY if arch.ffn != "moe" else ()
    shaped = replace(model, ffn=arch.ffn, **{k: getattr(arch, k) for k in own})
    if name in ("relu-matched", "swiglu-matched"):
        shaped = replace(shaped, ffn_hidden=matched_width(shaped, as_architecture(model, "nanokimi")))
    return shaped


def matched_width(model, target):
    """The hidden width that gives `model`'s feed-forward as many parameters as `target`'s (the
    nearest whole width; the rest of the two models is the same, so their totals match too)."""
    one, two = (ffn_params(replace(model, ffn_hidden=h)) for h in (1, 2))
    return max(1, round((ffn_params(target) - one) / (two - one) + 1))


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
        runs.append(replace(base, name=MODEL_NAMES[arch], architecture=arch, model=as_architecture(base.model, arch),
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

