import time
from pathlib import Path

import pytest
import torch

from nanokimi.running.runner import runner_alive
from nanokimi.status import ACTIVE
from nanokimi.running.store import Store

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
