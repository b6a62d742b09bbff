"""Which optimizer a run trains with: its settings (`OptimizerConfig`), the parameter split and
`build_optimizer`.

The split follows the original `build_optimizers`: the ≥2-D weights inside the transformer blocks
go to the matrix optimizer (TrueMuon, PyTorch's Muon, or MuonClip's TrueMuon with Moonlight's update
scale), everything else (embeddings, output head, LayerNorms, biases) to AdamW. The rule itself is
muon.py's (pure functions), the optimizer classes that apply it fast are optimizers.py's, QK-clip
(MuonClip's step after the step) is qkclip.py's, and no_dynamo.py keeps torch.optim from importing
torch._dynamo.
"""

from .config import OPTIMIZER_LABELS, OPTIMIZERS, OptimizerConfig  # noqa: F401 (read from here too)
from .no_dynamo import optim_without_dynamo
from .optimizers import FlatAdamW, MatrixwiseMuon, OptimizerSet, TrueMuon
from .qkclip import QKClip

# The rule's names, read from here by pages and tests.
from .muon import NS_COEFFICIENTS, matrices, newton_schulz, truemuon_lookahead, truemuon_update  # noqa: F401


def split_parameters(model):
    """(hidden matrices, everything else), checked to cover every parameter exactly once."""
    hidden = model.hidden_matrices()
    hidden_ids = {id(p) for p in hidden}
    others = [p for p in model.parameters() if id(p) not in hidden_ids]
    all_ids = [id(p) for p in model.parameters()]
    assert len(all_ids) == len(set(all_ids)) == len(hidden) + len(others), "parameter split must cover every parameter exactly once"
    assert hidden_ids.isdisjoint(id(p) for p in others)
    return hidden, others


def adamw(params, lr):
    # fused=True: one kernel does the whole update (the foreach path on CPU loops over parameters
    # once per elementwise op): 0.86 ms instead of 3.4 ms per NanoGPT step here; flat: one tensor.
    return FlatAdamW(params, lr)


def build_optimizer(model, config=OptimizerConfig(), threads=None):
    """An OptimizerSet for `model` as `config` (an OptimizerConfig, or just its name) says: "adamw"
    (all parameters), "truemuon", "muon" or "muonclip" (the hybrid; MuonClip's QK-clip after every
    step). `threads` (a BatchThreads) spreads TrueMuon's Newton–Schulz over cores."""
    if isinstance(config, str):
        config = OptimizerConfig(name=config)
    if config.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    optim_without_dynamo()
    if config.name == "adamw":
        return OptimizerSet(adamw=adamw(model.parameters(), config.lr))
    hidden, others = split_parameters(model)
    layout = model.matrix_layout()
    if config.name in ("truemuon", "muonclip"):
        matrix_opt = TrueMuon(hidden, lr=config.matrix_learning_rate, beta=config.beta,
                              weight_decay=config.weight_decay, ns_steps=config.ns_steps, threads=threads,
                              layout=layout, scaling="moonlight" if config.name == "muonclip" else "original")
    else:
        matrix_opt = MatrixwiseMuon(hidden, layout=layout, lr=config.matrix_lr, weight_decay=config.weight_decay,
                                    ns_steps=config.ns_steps, adjust_lr_fn=config.muon_adjust_lr)
    qk_clip = QKClip(model, config.clip_threshold) if config.clip_threshold else None
    return OptimizerSet(adamw=adamw(others, config.lr), matrix=matrix_opt, qk_clip=qk_clip)
