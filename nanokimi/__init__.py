"""nanokimi: does a Kimi-style model (MoE + TrueMuon) beat a plain GPT trained with AdamW?

The engine behind the app and the command line: data, models, optimizers, training, metrics,
reports and charts. Nothing here imports streamlit.
"""

import os

# OpenMP's default is to spin while waiting for work. When the cores are shared (another
# training process, the test suite, the app), two spinning intra-op threads made a seed-size
# training step 10x slower here (377 vs 40 ms); with passive waiting two threads cost 1.5x at worst.
# Set before torch is imported (libgomp reads it once, at load); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
