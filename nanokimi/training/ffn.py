"""The dense feed-forwards and what every weight matrix of the model shares: how it splits into the
original's matrices (`MatrixLayout`) and nn.Linear's initialisation for weights stored by hand.

- `DenseFFN` (NanoGPT): Linear(C, H) -> ReLU -> Linear(H, C), H = 4C in the original.
- `SwiGLU`: Linear(C, 2H) -> silu(a) * b -> Linear(H, C). With H = E·C it is the MoE's E experts
  fused into one, without the gate (`reference.fused_experts`): the control that tells routing
  from activation and size. The MoE's shared experts are one of these too (moe.py).

model.py builds the transformer from these and from moe.py's experts; both import from here.
"""

import math
from typing import NamedTuple

import torch.nn as nn
import torch.nn.functional as F


def uniform_(tensor, fan_in):
    """nn.Linear's default initialisation, for weights we store ourselves (stacked experts)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class MatrixLayout(NamedTuple):
    """How a stored weight splits into the original model's separate matrices, for the optimizers."""
    shape: tuple              # (rows, cols) of each original matrix; the weight is a stack of them
    transposed: bool = False  # stored (in, out), the transpose of the original nn.Linear weight (out, in):
                              # Newton–Schulz doesn't care (NS(G^T) = NS(G)^T), Muon's lr scaling does


class DenseFFN(nn.Module):
    """NanoGPT's feed-forward: Linear(C, H) -> ReLU -> Linear(H, C), H = 4C in the original."""

    def __init__(self, config):
        super().__init__()
        C, H = config.n_embd, config.hidden
        self.fc = nn.Linear(C, H)
        self.out = nn.Linear(H, C)

    def forward(self, x):
        return self.out(F.relu(self.fc(x)))

    def matrix_layout(self):
        return {self.fc.weight: MatrixLayout(tuple(self.fc.weight.shape)),
                self.out.weight: MatrixLayout(tuple(self.out.weight.shape))}


class SwiGLU(nn.Module):
    """One dense SwiGLU: Linear(C, 2H) -> silu(a) * b -> Linear(H, C), the rows of `fc` being
    [a (H) | b (H)]; H is `hidden`, else the config's."""

    def __init__(self, config, hidden=None):
        super().__init__()
        C, H = config.n_embd, hidden or config.hidden
        self.fc = nn.Linear(C, 2 * H)
        self.out = nn.Linear(H, C)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.out(F.silu(a) * b)

    def matrix_layout(self):
        return {self.fc.weight: MatrixLayout(tuple(self.fc.weight.shape)),
                self.out.weight: MatrixLayout(tuple(self.out.weight.shape))}
