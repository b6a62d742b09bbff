"""The engine's rooms: nothing in nanokimi imports streamlit, and a worker loads only what training needs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def loaded_after(statement):
    """The top-level modules a fresh interpreter has loaded after running `statement`."""
    code = f"{statement}; import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_the_check_sees_what_an_import_loads():
    assert "pandas" in loaded_after("import nanokimi.jobs"), "jobs builds history frames with pandas"


@pytest.mark.parametrize("module", ["nanokimi.cli", "nanokimi.jobs", "nanokimi.worker", "nanokimi.store",
                                    "nanokimi.runner", "nanokimi.request"])
def test_the_engine_never_imports_streamlit(module):
    assert "streamlit" not in loaded_after(f"import {module}")


def test_a_worker_imports_neither_pandas_nor_altair():
    loaded = loaded_after("import nanokimi.worker")
    assert "torch" in loaded and not {"pandas", "altair", "streamlit"} & loaded


def test_the_command_line_loads_pandas_and_altair_only_to_write_results():
    assert not {"pandas", "altair"} & loaded_after("import nanokimi.cli")
