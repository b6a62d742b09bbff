"""The engine's rooms: nothing in nanokimi imports streamlit, and a worker loads only what training needs:
its start-up is paid by every model of every run (benchmarks/startup.py)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def modules_after(statement):
    """Every module a fresh interpreter has loaded after running `statement`."""
    code = f"{statement}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def loaded_after(statement):
    """The top-level modules a fresh interpreter has loaded after running `statement`."""
    return {name.split(".")[0] for name in modules_after(statement)}


def trained_by_a_worker(tmp_path, optimizer):
    """The modules of a worker that has trained a tiny run with `optimizer` (worker.main, in-process)."""
    from nanokimi.experiments.compare import comparison_runs

    run = comparison_runs("quick", "adamw", optimizer, "builtin", iters=2, eval_interval=1, eval_iters=1, n_embd=16,
                          n_head=2, n_layer=1, block_size=8, batch_size=2, threads=1)[1]  # NanoKimi
    config = tmp_path / "config.json"
    config.write_text(json.dumps(run.to_dict()))
    result = tmp_path / "result.json"
    modules = modules_after(f"import nanokimi.running.worker; assert nanokimi.running.worker.main({str(config)!r}, {str(result)!r}) == 0")
    assert json.loads(result.read_text())["results"]["steps"] == 2
    return modules


def test_the_check_sees_what_an_import_loads():
    assert "pandas" in loaded_after("import nanokimi.running.jobs"), "jobs builds history frames with pandas"


@pytest.mark.parametrize("module", ["nanokimi.cli", "nanokimi.running.jobs", "nanokimi.running.worker", "nanokimi.running.store",
                                    "nanokimi.running.runner", "nanokimi.running.request"])
def test_the_engine_never_imports_streamlit(module):
    assert "streamlit" not in loaded_after(f"import {module}")


def test_a_worker_imports_neither_pandas_nor_altair():
    loaded = loaded_after("import nanokimi.running.worker")
    assert "torch" in loaded and not {"pandas", "altair", "streamlit"} & loaded


def test_the_command_line_loads_pandas_and_altair_only_to_write_results():
    assert not {"pandas", "altair"} & loaded_after("import nanokimi.cli")


def test_the_check_sees_torch_dynamo_when_an_optimizer_loads_it():
    assert "torch._dynamo" in modules_after("import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])")


@pytest.mark.parametrize("optimizer", ["adamw", "truemuon"])
def test_a_worker_trains_without_torch_dynamo_or_sympy(tmp_path, optimizer):
    """torch.optim's wrappers would import torch._dynamo (and sympy) on first use: 1.3 s of start-up."""
    modules = trained_by_a_worker(tmp_path, optimizer)
    assert "torch.optim" in modules and not {"torch._dynamo", "sympy"} & modules


def test_a_worker_loads_no_analysis_or_app_module(tmp_path):
    loaded = trained_by_a_worker(tmp_path, "truemuon")
    assert not {"pandas", "altair", "streamlit", "scipy", "matplotlib"} & {name.split(".")[0] for name in loaded}
    heavy = ("nanokimi.experiments", "nanokimi.results", "nanokimi.running.jobs", "nanokimi.running.store",
             "nanokimi.running.runner", "nanokimi.running.request", "nanokimi.running.eta", "nanokimi.running.view",
             "nanokimi.running.run_data", "nanokimi.training.sampling", "nanokimi.cli")
    assert "nanokimi.training.train" in loaded
    assert not [name for name in loaded if name.startswith(heavy)]


def test_the_compare_page_draws_its_controls_before_torch_pandas_altair_or_scipy_load():
    """What app/compare.py imports above its "the engine" line, in a fresh interpreter: a fresh server draws
    the controls before the seconds of those imports (benchmarks/first_paint.py)."""
    source = (REPO / "app" / "compare.py").read_text()
    head = ast.parse(source[:source.index("# --- the engine")])
    imports = [ast.unparse(node) for node in head.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    loaded = loaded_after("; ".join(imports))
    assert "streamlit" in loaded and "nanokimi" in loaded, "the check imports what the page does"
    assert not {"torch", "pandas", "altair", "scipy"} & loaded
    assert "torch" in loaded_after("import nanokimi.training.train"), "the check sees torch where it loads"
