"""The architectures nanokimi trains and the arms of its grids: one registry, read everywhere else.

An `Architecture` is one model family: the key the CLI, the grids and the stored runs use, how a
person reads it (display name, short name, a one-line description, its activation and its
feed-forward in a sentence), how it is drawn (its colour), and how its `ModelConfig` is built from
the settings every model of a comparison or grid shares. Adding a model family is one `register()`
call; the CLI's choices, the Ablation page's picker, the charts' colours and the reports' names
follow.

The four built-ins: NanoGPT is the dense feed-forward (Linear → ReLU → Linear), NanoKimi the
Mixture-of-Experts of SwiGLU experts; everything else about them is shared. NanoKimi differs from
NanoGPT in three ways at once (size: 33% more parameters at the seed configuration; activation:
SwiGLU against ReLU; routing: the gate), so two controls sit between them, each changing one:
`relu-matched` (NanoGPT's ReLU MLP at NanoKimi's parameter count) and `swiglu-matched` (one SwiGLU
at NanoKimi's parameter count: with dense routing NanoKimi computes a SwiGLU of width E·C whose
hidden units the gate scales in blocks, so this is its experts fused without the gate, give or
take the few units that stand for the gate's parameters: 258 hidden units against 4 × 64 at the
seed configuration). A control's rule is `matched_to`, the architecture it is matched to, and
`matched_by`, what its hidden width matches: that architecture's total parameters ("params") or its
forward FLOPs per token ("flops": for a sparse MoE, the active path: its router, shared experts and
the experts each token is sent to, as ModelConfig.forward_flops counts them).

A sparse MoE promises more parameters for the same compute, so it is judged against two dense
SwiGLUs (MoE papers do both): `active-matched`, with the Kimi-style MoE's FLOPs per token (equal
compute), and `total-matched`, with its parameters (equal size, at several times its compute).

An `Arm` is an architecture trained with an optimizer: the cell of a grid. It travels as fields
(a run's `RunConfig.architecture` and `optimizer.name`); its `key`, "nanokimi+truemuon", is how it
is stored and how `--arms` takes it, and its `name`, "NanoKimi · TrueMuon", how a person reads it.
Optimizer labels are training/config.py's (OPTIMIZER_LABELS); an arm's optimizer is drawn as its dash.

Colours are from the Okabe–Ito colour-blind-safe palette: Okabe, M. and Ito, K. (2008), "Color
Universal Design (CUD): how to make figures and presentations that are friendly to colorblind people".
"""

from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

from ..settings import SettingError, fields
from ..training.config import OPTIMIZER_LABELS, OPTIMIZERS, ModelConfig

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
OPTIMIZER_DASHES = {"adamw": [1, 0], "truemuon": [6, 3], "muon": [2, 2], "muonclip": [8, 3, 2, 3]}  # solid, dashed, dotted, dash-dot
# The settings only the MoE has, at their defaults: what a model without experts keeps, whatever is asked.
MOE_DEFAULTS = {f.name: f.default for f in fields(ModelConfig) if f.metadata["moe"]}


@dataclass(frozen=True)
class Architecture:
    key: str             # as the CLI, the grids and the stored runs name it: "nanokimi"
    name: str            # display name, where architectures are chosen: "NanoKimi (MoE)"
    short: str           # in tables, legends, sentences and a comparison's model names: "NanoKimi"
    description: str     # one line: what it is
    ffn: str             # the feed-forward its ModelConfig builds: "dense", "swiglu" or "moe"
    activation: str      # "ReLU" or "SwiGLU": what a verdict names when two models differ in it
    ffn_words: str       # its feed-forward in a sentence: "SwiGLU experts"
    color: str           # on every chart and page
    matched_to: str = ""  # a control: the architecture its hidden width is matched to
    matched_by: str = "params"  # what it matches (MATCHES): total parameters, or forward FLOPs per token
    recipe: Callable | None = None  # settings it fixes itself, from the shared ModelConfig: {setting: value}

    def build(self, shared):
        """`shared`'s settings (a ModelConfig) on this architecture, so one set of settings describes
        every model of a comparison or grid. A model without experts keeps the default values of the
        settings only the MoE has; an architecture with a `recipe` takes the settings its recipe
        fixes, whatever the shared ones say; a control takes the hidden width that matches the
        parameter count (or FLOPs per token, `matched_by`) of `matched_to` built from the same settings."""
        model = replace(shared, ffn=self.ffn, **(MOE_DEFAULTS if self.ffn != "moe" else {}))
        if self.recipe:
            model = replace(model, **self.recipe(model))
        if self.matched_to:
            model = replace(model, ffn_hidden=matched_width(model, get(self.matched_to).build(shared), self.matched_by))
        return model


# What a control's hidden width can match, in words.
MATCHES = {"params": "total parameters", "flops": "forward FLOPs per token"}


def matched_width(model, target, by="params"):
    """The hidden width that gives `model`'s feed-forward as many parameters as `target`'s (`by`
    "params"), or its forward pass as many FLOPs per token ("flops"): the nearest whole width. Both
    grow linearly with the width, and the rest of the two models is the same, so their totals match too."""
    if by == "flops":
        def measure(config):
            return config.forward_flops(1)
    elif by == "params":
        # counts a built module's parameters: torch, loaded when a control is built
        from ..training.model import ffn_params as measure
    else:
        raise ValueError(f"a control matches one of {', '.join(MATCHES)}, not {by!r}")
    one, two = (measure(replace(model, ffn_hidden=h)) for h in (1, 2))
    return max(1, round((measure(target) - one) / (two - one) + 1))


# --- the registry -----------------------------------------------------------------------------------

ARCHITECTURES = {}  # key -> Architecture, in the order choices, legends and tables list them


def register(architecture):
    """Add a model family to every list of architectures (a test may add one and `del` it again)."""
    if architecture.key in ARCHITECTURES:
        raise ValueError(f"architecture {architecture.key!r} is registered already")
    if "+" in architecture.key:
        raise ValueError(f"an architecture's key cannot contain '+' (it joins an arm's parts): {architecture.key!r}")
    ARCHITECTURES[architecture.key] = architecture
    return architecture


def get(key):
    """The architecture of `key`; SettingError naming the choices when there is none."""
    if key not in ARCHITECTURES:
        raise SettingError([("architecture", f"unknown architecture {key!r}; choose one of {', '.join(ARCHITECTURES)}")])
    return ARCHITECTURES[key]


def of_ffn(ffn):
    """The first architecture registered with feed-forward `ffn` (a results row names its model's
    feed-forward, not its architecture); None for none."""
    return next((a for a in ARCHITECTURES.values() if a.ffn == ffn), None)


def short_name(key):
    """"relu-matched" → "matched ReLU"; an unknown key as it is."""
    return ARCHITECTURES[key].short if key in ARCHITECTURES else key


def display_name(key):
    """"relu-matched" → "ReLU MLP, NanoKimi's size"; an unknown key as it is."""
    return ARCHITECTURES[key].name if key in ARCHITECTURES else key


register(Architecture(
    "nanogpt", "NanoGPT (ReLU MLP)", "NanoGPT",
    "the original dense feed-forward: Linear → ReLU → Linear, of width 4C",
    ffn="dense", activation="ReLU", ffn_words="a ReLU MLP", color=OKABE_ITO["blue"]))
register(Architecture(
    "relu-matched", "ReLU MLP, NanoKimi's size", "matched ReLU",
    "NanoGPT's ReLU MLP, its width matched to NanoKimi's parameter count: size alone",
    ffn="dense", activation="ReLU", ffn_words="a ReLU MLP", color=OKABE_ITO["bluish green"], matched_to="nanokimi"))
register(Architecture(
    "swiglu-matched", "SwiGLU, NanoKimi's size", "matched SwiGLU",
    "one SwiGLU at NanoKimi's parameter count: NanoKimi's experts fused, without the gate",
    ffn="swiglu", activation="SwiGLU", ffn_words="a SwiGLU MLP", color=OKABE_ITO["reddish purple"],
    matched_to="nanokimi"))
register(Architecture(
    "nanokimi", "NanoKimi (MoE)", "NanoKimi",
    "a Mixture-of-Experts: SwiGLU experts mixed by a softmax gate",
    ffn="moe", activation="SwiGLU", ffn_words="SwiGLU experts", color=OKABE_ITO["vermillion"]))



def kimi_recipe(model):
    """Kimi K2's MoE (DeepSeek-V3's skeleton) at nanokimi's size: 16 routed experts of width C/2, of
    which 2 run per token, and 1 shared expert of width C/2 that every token uses; sigmoid routing
    normalised over the chosen experts; loss-free bias balancing at a rate of 0.01 per step.

    K2 runs 8 of 384 experts (plus its shared one), each far narrower than its model: fine-grained
    sparsity. At C = 64 that cannot be copied (an expert of width C/24 would be 2-3 hidden units).
    Halving the width and routing to 2 of 16 keeps what matters: 8x as many routed parameters as
    run per token, and a shared expert for what every token needs. Per layer at the seed size the
    feed-forward then holds about 3.3x NanoGPT's parameters (16 + 1 experts of 6,272, the router
    1,040, against 33,088) and computes about 0.6x its FLOPs per token (2 + 1 experts of C/2 and
    the router: 38,912 against 65,536): more parameters for less compute, the bet of a sparse MoE.

    The bias rate is 10x DeepSeek-V3's 0.001: nanokimi's runs are 10^3 steps, not 10^5, and at 0.001
    the bias can move at most 1 in 1,000 steps. Measured at the seed size on Tiny Shakespeare, AdamW,
    1,000 steps, seed 1337 (one seed: the losses differ by less than seeds do): final validation
    loss 2.100 without the bias, 2.089 at 0.001, 2.083 at 0.01, 2.083 at 0.03; the busiest expert's
    load over the mean at the end, worst of the 4 layers, 2.60, 1.50, 1.28, 1.79. 0.01 keeps the
    experts most even, which also keeps the sparse step fast (dispatch.py pads to the busiest expert).
    """
    return dict(experts=16, top_k=2, ffn_hidden=max(1, model.n_embd // 2), shared_experts=1, router="sigmoid",
                aux_loss=0.0, bias_rate=0.01)


register(Architecture(
    "kimi", "Kimi-style (sparse MoE)", "Kimi-style",
    "a sparse fine-grained MoE as Kimi K2: 16 experts of width C/2, top-2, one shared expert, sigmoid router, "
    "loss-free bias balancing",
    ffn="moe", activation="SwiGLU", ffn_words="sparse SwiGLU experts with a shared expert",
    color=OKABE_ITO["orange"], recipe=kimi_recipe))
register(Architecture(
    "active-matched", "SwiGLU, Kimi-style's compute", "active-matched SwiGLU",
    "one dense SwiGLU with the Kimi-style MoE's forward FLOPs per token (router, shared and chosen experts): "
    "equal compute",
    ffn="swiglu", activation="SwiGLU", ffn_words="a SwiGLU MLP", color=OKABE_ITO["sky blue"],
    matched_to="kimi", matched_by="flops"))
register(Architecture(
    "total-matched", "SwiGLU, Kimi-style's size", "total-matched SwiGLU",
    "one dense SwiGLU with the Kimi-style MoE's total parameters: equal size, several times its compute",
    ffn="swiglu", activation="SwiGLU", ffn_words="a SwiGLU MLP", color=OKABE_ITO["black"], matched_to="kimi"))


def controls_of(key, by):
    """The registered controls matched to architecture `key` by `by` ("params" or "flops"), in order."""
    return [a.key for a in ARCHITECTURES.values() if a.matched_to == key and a.matched_by == by]


# --- arms -------------------------------------------------------------------------------------------

class Arm(NamedTuple):
    """An architecture trained with an optimizer. A tuple, so `for architecture, optimizer in arms`
    reads it and ("nanogpt", "adamw") equals it."""
    architecture: str  # a key of ARCHITECTURES
    optimizer: str     # a key of optim.OPTIMIZERS

    @property
    def key(self):
        """As stored and as `--arms` takes it: "nanokimi+truemuon"."""
        return f"{self.architecture}+{self.optimizer}"

    @property
    def name(self):
        """As a person reads it: "NanoKimi · TrueMuon"."""
        return f"{short_name(self.architecture)} · {OPTIMIZER_LABELS.get(self.optimizer, self.optimizer)}"

    @property
    def color(self):
        return ARCHITECTURES[self.architecture].color

    @property
    def dash(self):
        """Its optimizer's dash: AdamW solid, TrueMuon dashed, Muon dotted, MuonClip dash-dot; an
        architecture alone solid."""
        return OPTIMIZER_DASHES.get(self.optimizer, OPTIMIZER_DASHES["adamw"])

    @property
    def rank(self):
        """Where it goes in a legend: by architecture in registry order, then by optimizer."""
        architectures, optimizers = list(ARCHITECTURES), list(OPTIMIZERS)
        return (architectures.index(self.architecture) if self.architecture in architectures else len(architectures),
                optimizers.index(self.optimizer) if self.optimizer in optimizers else len(optimizers))

    @classmethod
    def of(cls, run):
        """The arm a RunConfig was built as."""
        return cls(run.architecture, run.optimizer.name)

    @classmethod
    def parse(cls, key):
        """The arm of a key ("nanogpt+adamw"); SettingError when either part is unknown."""
        architecture, _, optimizer = key.partition("+")
        if architecture not in ARCHITECTURES or optimizer not in OPTIMIZERS:
            raise SettingError([("arms", f"arm {key!r} is not ARCHITECTURE+OPTIMIZER with an architecture of "
                                         f"{', '.join(ARCHITECTURES)} and an optimizer of {', '.join(OPTIMIZERS)}")])
        return cls(architecture, optimizer)


def named(name):
    """The arm a series is named by, exactly: an arm's key or name ("nanokimi+truemuon", "NanoKimi ·
    TrueMuon"), or an architecture's key, short name or display name (its optimizer then ""); None
    for any other name, even one that contains a model's name."""
    names = {}
    for architecture in ARCHITECTURES.values():
        alone = Arm(architecture.key, "")
        names.update({architecture.key: alone, architecture.short: alone, architecture.name: alone})
        for optimizer in OPTIMIZERS:
            arm = Arm(architecture.key, optimizer)
            names.update({arm.key: arm, arm.name: arm})
    return names.get(str(name))


def arm_name(key):
    """An arm's key as a person reads it: "nanokimi+truemuon" → "NanoKimi · TrueMuon"; anything that is
    no arm's key as it is."""
    try:
        return Arm.parse(str(key)).name
    except SettingError:
        return key
