import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Session- and module-scoped fixtures run before the per-test fixtures below: give them a private cache
    and store too, so no test ever writes into the user's own cache or results store."""
    saved = {k: os.environ.get(k) for k in ("XLING_CACHE", "XLING_STORE")}
    if "XLING_CACHE_KEEP" not in os.environ:
        os.environ["XLING_CACHE"] = str(tmp_path_factory.mktemp("xling-session-cache"))
    os.environ["XLING_STORE"] = str(tmp_path_factory.mktemp("xling-session-store") / "results.sqlite")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private xling cache unless it sets XLING_CACHE itself."""
    if "XLING_CACHE_KEEP" not in os.environ:
        monkeypatch.setenv("XLING_CACHE", str(tmp_path_factory.mktemp("xling-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    """The default results store of every test is a private file, never the user's data folder."""
    monkeypatch.setenv("XLING_STORE", str(tmp_path_factory.mktemp("xling-store") / "results.sqlite"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {k: tiny_models.save(k, root / k) for k in ("bert", "xlmr", "llama", "gpt2", "gemma3")}


@pytest.fixture(scope="session")
def tiny_causal_dirs(tmp_path_factory):
    """Tiny decoders saved with their LM heads (untied Llama, tied GPT-2 and Gemma 3): what scoring and
    generation load, where a missing untied head is refused rather than initialised at random."""
    root = tmp_path_factory.mktemp("tiny-causal")
    return {k: tiny_models.save(k, root / k, head=True) for k in ("llama", "gpt2", "gemma3")}


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread (and the machine is shared)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
