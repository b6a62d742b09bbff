"""nanokimi: does a Kimi-style model (MoE + TrueMuon) beat a plain GPT trained with AdamW?

The engine behind the app and the command line: data, models, optimizers, training, metrics,
reports and charts. Nothing here imports streamlit.
"""
