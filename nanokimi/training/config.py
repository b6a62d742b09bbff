"""What a run is, as data: the settings of a model (`ModelConfig`), of its optimizer
(`OptimizerConfig`) and of its training (`RunConfig`), each validated, with no torch.

They live apart from the code that builds and trains a model so that reading, checking and storing a
run's settings costs no torch import (1.7-2.3 s on a fresh process here): the app draws its controls
from them (and the presets, experiments/compare.py) before anything heavy loads
(benchmarks/first_paint.py). model.py, optim.py and train.py, which build and train what these
describe, read them from here and hand them on under their old names.
"""

import dataclasses
from dataclasses import dataclass, field

from ..settings import Problems, setting


FFNS = ("dense", "swiglu", "moe")
ROUTERS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65  # number of distinct characters in the corpus (set from the text)
    block_size: int = setting(32, "context length in characters (seed: 32)")
    n_embd: int = setting(64, "embedding size, the model width C (seed: 64)")
    n_head: int = setting(4, "attention heads; head_size = n_embd // n_head (seed: 4)")
    n_layer: int = setting(4, "transformer blocks (seed: 4)")
    ffn: str = "dense"    # "dense" (ReLU MLP, NanoGPT), "swiglu" (one SwiGLU) or "moe" (NanoKimi): which model
    ffn_hidden: int = setting(0, "hidden width of the feed-forward (per expert in the MoE); 0: the original's, "
                                 "4·n_embd for the ReLU MLP, n_embd per expert, experts·n_embd for a dense SwiGLU")
    experts: int = setting(4, "experts per MoE layer (seed: 4)", moe=True)
    top_k: int = setting(0, "route each token to its k most probable experts (default 0: all, dense routing)",
                         moe=True)
    dropout: float = setting(0.0, "dropout probability (seed: 0)")
    attn_scale: str = setting("seed", "seed: scores * n_embd**-0.5 (the original's quirk); standard: head_size**-0.5",
                              choices=("seed", "standard"))
    aux_loss: float = setting(0.0, "Switch-style load-balancing loss coefficient for top-k routing "
                                   "(e.g. 0.01; default 0: off, as the original)", moe=True)
    shared_experts: int = setting(0, "shared experts per MoE layer, each ffn_hidden wide, that every token uses "
                                     "unweighted beside its routed ones (Kimi K2, DeepSeek-V3: 1; default 0: none, "
                                     "as the original)", moe=True)
    router: str = setting("softmax", "how the gate scores experts: softmax (the original) or sigmoid, the mixing "
                                     "weights normalised over the chosen experts (DeepSeek-V3, Kimi K2)",
                          choices=ROUTERS, moe=True)
    bias_rate: float = setting(0.0, "loss-free balancing (DeepSeek-V3) for top-k routing: a per-expert bias, added to "
                                    "the scores only to choose the experts, moves this much toward equal load after "
                                    "every step (e.g. 0.001; default 0: off)", moe=True)

    def validate(self):
        """Raise SettingError naming every setting that makes this configuration impossible to build."""
        problems = Problems()
        problems.at_least(self, 1, "vocab_size", "block_size", "n_embd", "n_head", "n_layer", "experts")
        problems.at_least(self, 0, "ffn_hidden", "shared_experts")
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.add("n_head", f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.ffn not in FFNS:
            problems.add("ffn", f"ffn must be one of {', '.join(FFNS)}, got {self.ffn!r}")
        if not 0 <= self.top_k <= self.experts:
            problems.add("top_k", f"top_k must be between 1 and experts ({self.experts}), or 0 for dense routing; "
                                  f"got {self.top_k}")
        if not 0.0 <= self.dropout < 1.0:
            problems.add("dropout", f"dropout must be in [0, 1), got {self.dropout}")
        if self.aux_loss < 0:
            problems.add("aux_loss", f"aux_loss must be 0 (off) or positive, got {self.aux_loss}")
        elif self.aux_loss and not self.sparse:
            problems.add("aux_loss", "aux_loss balances top-k routing: it needs the MoE model with top_k below experts")
        if self.bias_rate < 0:
            problems.add("bias_rate", f"bias_rate must be 0 (off) or positive, got {self.bias_rate}")
        elif self.bias_rate and not self.sparse:
            problems.add("bias_rate", "bias_rate balances top-k routing: it needs the MoE model with top_k below experts")
        elif self.bias_rate and self.aux_loss > 0:
            problems.add("bias_rate", "choose one way to balance the experts: aux_loss (the Switch loss) or bias_rate "
                                      "(the loss-free bias), not both")
        problems.check_choices(self)
        problems.raise_any()
        return self

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    @property
    def hidden(self):
        """The feed-forward's hidden width (per expert in the MoE)."""
        if self.ffn_hidden:
            return self.ffn_hidden
        return {"dense": 4 * self.n_embd, "swiglu": self.experts * self.n_embd}.get(self.ffn, self.n_embd)

    @property
    def sparse(self):
        """Is this the MoE with top-k routing (each token computes only some of its experts)?"""
        return self.ffn == "moe" and 0 < self.top_k < self.experts

    def forward_flops(self, tokens):
        """Matmul FLOPs of one forward pass over `tokens` tokens (2 per multiply-add), for throughput
        figures. The MoE counts its router (C·E multiply-adds), its shared experts and the routed
        experts each token is sent to (three C×H matrices each: SwiGLU's a, b and output); not
        counted, here as for the dense models: biases, activations, softmax/sigmoid, top-k, the
        sort, gather and scatter of tokens, LayerNorms and embeddings."""
        C, T, H = self.n_embd, self.block_size, self.hidden
        attn = 2 * (3 * C * C + C * C) + 2 * 2 * T * C  # projections + scores and weighted values (causal: ~half of T^2, counted full)
        if self.ffn == "dense":
            ffn = 2 * 2 * H * C
        elif self.ffn == "swiglu":
            ffn = 2 * 3 * H * C
        else:
            ffn = 2 * C * self.experts + (self.routed_experts + self.shared_experts) * 2 * 3 * H * C
        head = 2 * C * self.vocab_size
        return tokens * (self.n_layer * (attn + ffn) + head)

    @property
    def routed_experts(self):
        """Experts computed per token: all of them under dense routing."""
        return self.top_k or self.experts


# Training FLOPs per forward FLOP: the forward pass, then the backward's two matmuls for each of the
# forward's (the gradient with respect to the input and with respect to the weight), as Kaplan et al.
# (2020) count C = 6N per token. The optimizer's own work (Newton–Schulz, AdamW's moments) is not counted.
TRAIN_FLOPS_PER_FORWARD = 3

OPTIMIZERS = ("adamw", "truemuon", "muon", "muonclip")
OPTIMIZER_LABELS = {"adamw": "AdamW", "truemuon": "TrueMuon", "muon": "Muon (PyTorch)", "muonclip": "MuonClip"}
# The optimizers whose one learning rate, `lr`, drives every parameter: AdamW, and MuonClip, whose
# Moonlight-scaled matrix updates have AdamW's update RMS (muon.py). The others give the hidden
# matrices `matrix_lr`.
ONE_LEARNING_RATE = ("adamw", "muonclip")


@dataclass(frozen=True)
class OptimizerConfig:
    # adamw (every parameter); truemuon, muon or muonclip (hidden matrices; AdamW the rest). muonclip
    # is Kimi K2's: TrueMuon's per-matrix rule with Moonlight's update scale at `lr`, then QK-clip.
    name: str = "adamw"
    lr: float = setting(1e-3, "AdamW learning rate (seed: 1e-3); MuonClip's for every parameter")
    matrix_lr: float = setting(1e-2, "TrueMuon / Muon learning rate of the hidden matrices (seed: 1e-2)")
    beta: float = setting(0.9, "TrueMuon / MuonClip momentum (seed: 0.9)")
    weight_decay: float = setting(0.01, "TrueMuon / Muon / MuonClip weight decay (seed: 0.01; AdamW keeps torch's 0.01)")
    ns_steps: int = setting(5, "Newton–Schulz steps (seed: 5; the original authors suggested 3)")
    muon_adjust_lr: str | None = setting(None, "torch.optim.Muon's adjust_lr_fn (default: torch's, 'original')",
                                         choices=("original", "match_rms_adamw"))
    qk_clip: float = setting(100.0, "MuonClip's QK-clip threshold τ: after each step, a head whose largest "
                                    "attention logit passed τ has its query and key weights scaled to bring it "
                                    "back to τ (default 100, as Kimi K2); 0: off")

    def validate(self):
        """Raise SettingError naming every setting that cannot train."""
        problems = Problems()
        if self.name not in OPTIMIZERS:
            problems.add("optimizer", f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        for name in ("lr", "matrix_lr"):
            if not getattr(self, name) > 0:
                problems.add(name, f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.beta < 1:
            problems.add("beta", f"beta must be in [0, 1), got {self.beta}")
        if self.weight_decay < 0:
            problems.add("weight_decay", f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.qk_clip < 0:
            problems.add("qk_clip", f"qk_clip must be 0 (off) or a positive threshold on attention logits, "
                                    f"got {self.qk_clip}")
        problems.at_least(self, 1, "ns_steps")
        problems.finite(self)
        problems.check_choices(self)
        problems.raise_any()
        return self

    @property
    def label(self):
        return OPTIMIZER_LABELS.get(self.name, self.name)

    @property
    def matrix_learning_rate(self):
        """The hidden matrices' learning rate: `lr` where one learning rate drives every parameter."""
        return self.lr if self.name in ONE_LEARNING_RATE else self.matrix_lr

    @property
    def clip_threshold(self):
        """QK-clip's τ, 0 when this optimizer does not clip (only MuonClip does)."""
        return self.qk_clip if self.name == "muonclip" else 0.0


@dataclass
class RunConfig:
    name: str = "NanoGPT"              # the model's name in reports and the store; unique within a stored run
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    architecture: str = ""             # the named architecture the model was built as (arms.ARCHITECTURES)
    iters: int = setting(10_000, "training steps per model (seed: 10000)")
    eval_interval: int = setting(100, "evaluate every N steps (seed: 100)")
    eval_iters: int = setting(200, "batches per split in every evaluation (seed: 200)")
    batch_size: int = setting(16, "sequences per batch (seed: 16)")
    seed: int = setting(1337, "torch seed for initialisation and batches (seed: 1337)")
    data: str = "input.txt"            # a path, or "builtin" (see data.resolve_source for the other keys)
    device: str = setting("auto", "auto (default: cuda, else mps, else cpu), cpu, cuda or mps")
    threads: int = setting(0, "threads per training process (default 0: every core this process may use); "
                              "on the CPU each batch is split over them, see README 'Batch threads'")
    gen_chars: int = 200               # characters sampled to measure generation speed
    checkpoint: str | None = None      # where to save the trained weights, if anywhere

    def validate(self):
        """Raise SettingError naming every setting (of the run, its model and its optimizer) that cannot train."""
        problems = Problems()
        problems.extend_from(self.model.validate)
        problems.finite(self.model)  # aux_loss < 0 lets nan and inf through
        problems.extend_from(self.optimizer.validate)
        problems.at_least(self, 1, "iters", "eval_interval", "eval_iters", "batch_size")
        problems.at_least(self, 0, "threads")
        problems.finite(self)
        problems.check_choices(self)
        problems.raise_any()
        return self

    @property
    def arm(self):
        """A grid's arm: its architecture and optimizer ("nanokimi+truemuon"); "" when built directly."""
        return f"{self.architecture}+{self.optimizer.name}" if self.architecture else ""

    def flops_per_step(self, vocab_size):
        """Training FLOPs of one step on a text of `vocab_size` characters: TRAIN_FLOPS_PER_FORWARD ×
        the forward matmul FLOPs (ModelConfig.forward_flops) of one batch, batch_size × block_size tokens."""
        model = dataclasses.replace(self.model, vocab_size=vocab_size)
        return TRAIN_FLOPS_PER_FORWARD * model.forward_flops(self.batch_size * model.block_size)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A RunConfig from to_dict() (runs stored by earlier versions go through running/migrate.py first)."""
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        d["optimizer"] = OptimizerConfig(**d["optimizer"])
        return cls(**d)
