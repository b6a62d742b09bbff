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
- a run's live progress followed one model (`model`, `step`) with no per-model `models` record;
- history points had no `train_flops` (training FLOPs so far) and results rows no `train_flops`: both
  are steps × the run's training FLOPs per step, derived from the forward FLOPs per token its results
  recorded (`flops_per_step`). A run whose results recorded none keeps them missing: the count needs
  its text's vocabulary, which is not stored with the run.

The SQL that filters runs by kind (store.KIND) reads a missing kind as a comparison for the same
reason; it is the one reading of the old shape outside this module.
"""

from ..training.config import TRAIN_FLOPS_PER_FORWARD  # torch-free, as everything here

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


def flops_per_step(config, results_row):
    """A stored run's training FLOPs per step, from its RunConfig dict (today's shape) and the forward
    FLOPs per token its results row recorded (RunConfig.flops_per_step's count); None without them."""
    per_token = (results_row or {}).get("flops_per_token")
    if per_token is None or per_token != per_token:  # missing, None or NaN
        return None
    return TRAIN_FLOPS_PER_FORWARD * per_token * config["batch_size"] * config["model"]["block_size"]


def history(rows, per_step):
    """History rows with `train_flops` where it is missing or None: the row's step × `per_step(row)`
    (None where that is None). Rows that have it are passed as they are; a new list."""
    out = []
    for row in rows:
        if row.get("train_flops") is None:
            step_flops = per_step(row)
            row = {**row, "train_flops": None if step_flops is None else row["step"] * step_flops}
        out.append(row)
    return out


def results_row(row, config):
    """A results row with `train_flops` (steps × FLOPs per step) where it has none and it can be derived."""
    step_flops = flops_per_step(config, row)
    if "train_flops" in row or step_flops is None or not isinstance(row.get("steps"), int):
        return row
    return {**row, "train_flops": row["steps"] * step_flops}


def stored_results(results, configs):
    """A stored run's results rows (store.py's `results`), each with train_flops where it can be derived;
    `configs`: its RunConfig dicts in today's shape, matched to the rows by model name."""
    by_name = {c.get("name"): c for c in configs}
    return [results_row(r, by_name[r.get("model")]) if r.get("model") in by_name else r for r in results]


def kept_run(saved, config):
    """A grid's kept run (grid.py's payload: config, status, message, results, history) with training
    FLOPs in its results and history; `config` its RunConfig dict in today's shape."""
    step_flops = flops_per_step(config, saved["results"])
    return {**saved, "results": results_row(saved["results"], config),
            "history": history(saved["history"], lambda row: step_flops)}
