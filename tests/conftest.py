"""Shared fixtures: the real default model, a tiny Llama built from a config, personas, data."""

import os

# Before transformers is imported anywhere: tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Models load in this process unless a test starts a server itself (tests/engines/test_remote.py).
os.environ.pop("PERSONA_STUDIO_ENGINE_URL", None)

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPC_CSV = REPO.parent / "shared" / "data" / "synthetic-persona-chat" / "Synthetic-Persona-Chat_valid.csv"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from core.default_model import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama (hidden 32) with the default model's tokenizer and chat template:
    real tokenisation and templates, ~1.6 M parameters, milliseconds per token.

    Only the tokenizer is needed, not the 500 MB converted default model
    (`core.default_model.tokenizer_source`: a GPU machine may have only a tokenizer folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.default_model import tokenizer_source

    source, extra = tokenizer_source()
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        # Large init makes the random logits peaked, so greedy decoding has no near-ties
        # that padding round-off could flip (batched == single tests rely on it).
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from engines.config import EngineConfig
    from engines.factory import load_engine

    return load_engine(EngineConfig(model=str(tiny_model_dir)))


@pytest.fixture(scope="session")
def default_engine(default_model_dir):
    from engines.config import EngineConfig
    from engines.factory import load_engine

    return load_engine(EngineConfig(model="default"))


@pytest.fixture
def ada():
    from core.persona import load_persona

    return load_persona(REPO / "personas" / "ada.yaml")


@pytest.fixture
def spc_csv() -> Path:
    if not SPC_CSV.is_file():
        pytest.skip(f"shared data not found at {SPC_CSV}")
    return SPC_CSV


@pytest.fixture
def db_file_url(tmp_path) -> str:
    """A SQLite database URL under the test's tmp_path (created on first open)."""
    return f"sqlite:///{tmp_path / 'labels.db'}"


@pytest.fixture
def store(db_file_url):
    """An empty label store (SQLite) for one test."""
    from store import Store

    with Store(db_file_url) as opened:
        yield opened


def studio_context(tmp_path: Path, store, engines: dict, settings=None, personas_dir: Path = REPO / "personas"):
    """The app's context (what every tab needs) on the given engines by version name; no
    model is loaded unless a version without an engine is asked for.

    The in-process `store` is wrapped in `CheckedStore`: each call's arguments and result make the
    pickle round trip they make to the app's store process, so a generator or a lambda passed to
    the store fails here as it would in the served app (store/boundary.py)."""
    from engines.config import EngineConfig, GenerationSettings
    from engines.pool import EnginePool
    from store import CheckedStore, Store
    from ui.context import AppContext

    if isinstance(store, Store):
        store = CheckedStore(store)

    pool = EnginePool(EngineConfig(runs_dir=str(tmp_path / "runs")))
    for version, engine in engines.items():
        pool.put(version, engine)
    settings = settings or GenerationSettings(temperature=0, max_new_tokens=8)
    # The dataset Organise reads: the project's shared split (a test fixture; the product's default is the hub's).
    from corpus.formats import SHARED_VALID_CSV

    return AppContext(pool, store, str(personas_dir), dataset=str(SHARED_VALID_CSV), settings=settings)


@contextmanager
def serving(ctx, **launch_kwargs) -> Iterator[str]:
    """The whole app (`app.build_demo`) on `ctx`, served in this process; yields its URL."""
    from app import build_demo
    from ui.label import LABEL_SHORTCUTS_JS

    demo = build_demo(ctx)
    demo.queue().launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, js=LABEL_SHORTCUTS_JS, **launch_kwargs
    )
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture
def scope_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own for scope classifiers (none shared between tests)."""
    from chatbot import scope

    monkeypatch.setenv("PERSONA_STUDIO_CACHE", str(tmp_path / "cache"))
    scope._classifier.cache_clear()
    yield tmp_path / "cache"
    scope._classifier.cache_clear()
