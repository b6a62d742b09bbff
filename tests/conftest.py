import re
import time
from pathlib import Path

import pytest
import torch

from nanokimi.experiments.compare import architecture
from nanokimi.running.runner import runner_alive
from nanokimi.status import ACTIVE
from nanokimi.running.store import Store
from nanokimi.settings import apply
from nanokimi.training.model import LanguageModel, ModelConfig
from nanokimi.training.optim import NS_COEFFICIENTS, OptimizerConfig
from nanokimi.training.train import RunConfig

torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves the other core free

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def shakespeare_path():
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} not found (../shared beside the checkout)")
    return SHAKESPEARE


@pytest.fixture
def small_text_file(tmp_path):
    """A few KB of varied text: enough for block sizes up to 32."""
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) + "." for i in range(120)]
    path = tmp_path / "small.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def float64():
    """Build tensors and models in float64, so comparisons with a reference are exact to ~1e-12."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOKIMI_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    store = Store(tmp_path / "home")  # leave no runner behind: stop what is left, let it exit
    for run in store.list_runs(ACTIVE):
        store.request_stop(run["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and runner_alive(store.home):
        time.sleep(0.2)


@pytest.fixture
def server(tmp_path):
    """The app served by `streamlit run` for a real-browser test (tests/browser.py); skipped, saying why,
    without Debian's Chromium or playwright."""
    from tests.browser import CHROMIUM, streamlit_server

    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium); skipping the real-browser test"
        print(reason)
        pytest.skip(reason)
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    try:
        with streamlit_server(tmp_path / "home", tmp_path / "server.log") as url:
            yield url
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def equivalence_corpus():
    """Tiny Shakespeare when ../shared has it, else the built-in corpus: checks that need real text never skip."""
    from nanokimi.training.data import BUILTIN, load_corpus
    return load_corpus(SHAKESPEARE if SHAKESPEARE.is_file() else BUILTIN)


# --- helpers the test files share ------------------------------------------------------------------

def tiny_run(data, name="NanoKimi", arch="nanokimi", **overrides):
    model_overrides = {k: overrides.pop(k) for k in ("top_k", "experts", "n_layer") if k in overrides}
    model = architecture(arch, block_size=8, n_embd=16, n_head=2, n_layer=model_overrides.pop("n_layer", 1),
                   **({"experts": 2} | model_overrides if arch == "nanokimi" else {}))
    optimizer = overrides.pop("optimizer", "truemuon" if arch == "nanokimi" else "adamw")
    run = RunConfig(name=name, model=model, optimizer=OptimizerConfig(optimizer), data=str(data), gen_chars=4,
                    **{k: overrides.pop(k) for k in ("checkpoint", "arm") if k in overrides})
    return apply(run, **{"iters": 6, "eval_interval": 3, "eval_iters": 2, "batch_size": 4, "seed": 3, "threads": 1,
                         **overrides})


def losses(history, metric):
    return [(row["step"], row["value"]) for row in history if row["metric"] == metric]



LM_TINY = dict(vocab_size=13, block_size=8, n_embd=16, n_head=4, n_layer=2)


def tiny_model(ffn="moe", **overrides):
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(**{**LM_TINY, **overrides}, ffn=ffn, experts=4))


def one_matrix_newton_schulz(G, steps=5):
    """The issue's formula for one matrix, written out here independently of the package."""
    a, b, c = NS_COEFFICIENTS
    X = G / (torch.linalg.norm(G) + 1e-7)
    tall = G.shape[0] > G.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def spec_rows(spec, datasets, parent=None):
    """The data rows a (sub)spec draws, looked up by name in the top-level datasets (a layer
    without data of its own draws its `parent`'s), through its filter `datum.kind === '…'` if any."""
    rows = datasets[(spec.get("data") or parent["data"])["name"]]
    for step in spec.get("transform", []):
        field, value = re.fullmatch(r"\(datum\.(\w+) === '(.*)'\)", step["filter"]).groups()
        rows = [row for row in rows if row[field] == value]
    return rows
