"""A trained model's weights on disk: saved by train() (`RunConfig.checkpoint`), read back by sampling
and the app's downloads. Loaded with `weights_only=True`, so a checkpoint file can carry tensors and
plain data only, never code.
"""

import dataclasses

import torch

from .model import LanguageModel, ModelConfig


def save_checkpoint(path, model, corpus, run):
    torch.save({"model_config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                "chars": corpus.chars, "run_config": run.to_dict()}, path)


def load_checkpoint(path, device="cpu"):
    """(model, chars) from a checkpoint saved by train(); loaded with weights_only=True."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = LanguageModel(ModelConfig(**ckpt["model_config"])).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt["chars"]
