"""Runs stored by earlier versions of nanokimi, brought to today's shape in one step.

Two places keep runs across versions: the run store (store.py: a run's request, RunConfigs and live
progress as JSON) and a grid's `--out`/runs/ folder (grid.py: one gzipped JSON per finished run).
Both hand what they read to this module before anything else looks at it, so the rest of the code
(RunConfig.from_dict, Request.from_stored, the run view) reads today's shape only. Each change of
shape is one function here, applied in order; a dict already in today's shape passes unchanged.

The changes, oldest first:
- a RunConfig's optimizer settings (lr, matrix_lr, beta, ...) were fields of the run, and its
  `optimizer` the optimizer's name: they are an OptimizerConfig dict now;
- `arm` was for a while a field of a RunConfig: it is derived from the architecture and the
  optimizer now, so it is dropped;
- runs carried no `architecture`: they were the comparison's two models, told apart by their
  feed-forward (FFN_OF_THE_TIME);
- a request had no `kind`: every stored run was a comparison;
- a run's live progress followed one model (`model`, `step`) with no per-model `models` record.

The SQL that filters runs by kind (store.KIND) reads a missing kind as a comparison for the same
reason; it is the one reading of the old shape outside this module.
"""

# The two models of the comparison before runs named their architecture, by feed-forward. This is
# history, not the registry: later architectures with the same feed-forward never stored runs so.
FFN_OF_THE_TIME = {"dense": "nanogpt", "moe": "nanokimi"}
# The optimizer settings that were fields of a RunConfig before OptimizerConfig (the first versions'
# train.py). History too, so this module imports nothing: the store reads through it without torch.
OPTIMIZER_SETTINGS = ("lr", "matrix_lr", "beta", "weight_decay", "ns_steps", "muon_adjust_lr")
COMPARISON = "comparison"


def run_config(d):
    """A stored RunConfig dict in today's shape (a new dict; `d` is left as it is)."""
    d = dict(d)
    d.pop("arm", None)
    if isinstance(d.get("optimizer"), str):
        settings = {k: d.pop(k) for k in OPTIMIZER_SETTINGS if k in d}
        d["optimizer"] = {"name": d["optimizer"], **settings}
    if "architecture" not in d and "model" in d:
        d["architecture"] = FFN_OF_THE_TIME.get(d["model"].get("ffn"), "")
    return d


def stored_config(config):
    """A stored run's config ({"request": ..., "runs": [...]}) in today's shape."""
    request = dict(config.get("request", {}))
    request.setdefault("kind", COMPARISON)
    return {**config, "request": request, "runs": [run_config(d) for d in config.get("runs", [])]}


def progress(p):
    """A stored run's live progress in today's shape: per-model steps under `models`."""
    if "models" in p:
        return p
    models = {p["model"]: {"steps": p.get("step", 0)}} if p.get("model") else {}
    return {**p, "models": models}
