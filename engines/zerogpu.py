"""Generation on a ZeroGPU Space: the model runs inside `@spaces.GPU`, which holds a GPU for the
call only. Off ZeroGPU (a laptop, a CPU Space, a dedicated GPU) nothing changes: `gpu()` hands
back the function itself, and the app's engines are not wrapped.

ZeroGPU runs a decorated function in a forked worker and pickles its arguments and what it
returns or yields (hub docs, spaces-zerogpu; spaces 0.51 `zero/wrappers.py`). So the GPU
functions here take a picklable engine key, messages and settings, never the engine; the
engine comes from `_engines`, which the fork inherits (a version first loaded after the
worker was forked is loaded again inside it). Streaming works: yielded pieces travel back one
by one. The app imports this module before anything touches CUDA (ZeroGPU's requirement).

    pool = EnginePool(cfg, loader=engine_loader())   # engines/factory.py wraps engines on ZeroGPU
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator

ON_ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")  # set by ZeroGPU Spaces
if ON_ZERO_GPU and importlib.util.find_spec("spaces"):  # preinstalled on Spaces; optional here
    import spaces  # patches torch: before anything of ours imports it
else:
    spaces = None

from core.conversation import Messages  # noqa: E402
from engines.config import EngineConfig, GenerationSettings  # noqa: E402
from engines.engine import ChatEngine, guided  # noqa: E402

# Seconds of GPU a request asks for. ZeroGPU queues long requests behind short ones, so ask
# for what the reply can take: a 135M-8B model decodes well above 20 tok/s on an H200 slice,
# plus a fixed margin for the worker, the prefill and a first call's weights transfer.
TOKENS_PER_SECOND = 20
MARGIN_S = 15
MAX_S = 300

GPU_FUNCTIONS: dict[str, Callable] = {}  # name -> its duration function (tests check the list)
_engines: dict[str, ChatEngine] = {}  # engine key -> the engine, inherited by ZeroGPU's workers
_load: list[Callable[[EngineConfig], ChatEngine]] = []  # the factory's loader, for versions loaded after the fork


def gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """`@spaces.GPU(duration=duration)` on ZeroGPU (duration: the function's own arguments ->
    seconds); elsewhere the function itself, unchanged."""

    def wrap(fn: Callable) -> Callable:
        GPU_FUNCTIONS[fn.__name__] = duration
        return spaces.GPU(duration=duration)(fn) if spaces is not None else fn

    return wrap


def reply_seconds(key: str, messages: Messages, settings: GenerationSettings, negative=None) -> int:
    passes = 2 if guided(settings, negative) else 1  # guidance: a second forward per token
    return min(MAX_S, MARGIN_S + passes * settings.max_new_tokens // TOKENS_PER_SECOND)


def batch_seconds(
    key: str, conversations: list[Messages], settings: GenerationSettings, batch_size: int = 8, negatives=None
) -> int:
    batches = -(-len(conversations) // batch_size) * (2 if guided(settings, negatives) else 1)
    return min(MAX_S, MARGIN_S + batches * settings.max_new_tokens // TOKENS_PER_SECOND)


def _engine(key: str) -> ChatEngine:
    if key not in _engines:  # loaded in the parent after this worker was forked
        _engines[key] = _load[0](EngineConfig.model_validate_json(key))
    return _engines[key]


@gpu(duration=reply_seconds)
def stream_reply(
    key: str, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
) -> Iterator[str]:
    """One chat reply, streamed (Chat, Compare, `/chat`, `/retry`, `/compare`)."""
    yield from _engine(key).stream(messages, settings, negative)


@gpu(duration=batch_seconds)
def generate_batch(
    key: str, conversations: list[Messages], settings: GenerationSettings, batch_size: int = 8, negatives=None
):
    """Batched replies (evaluation runs started from the app)."""
    return _engine(key).generate(conversations, settings, negatives, batch_size=batch_size)


class GPUEngine:
    """An engine whose generation goes through the GPU functions above; everything else
    (token counting, fitting the history, its name, window) is the wrapped engine's."""

    def __init__(self, engine: ChatEngine, key: str, load: Callable[[EngineConfig], ChatEngine]):
        self.engine, self.key = engine, key
        _engines[key] = engine
        _load[:] = [load]

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def stream(self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None):
        return stream_reply(self.key, messages, settings, negative)

    def generate(self, conversations: list[Messages], settings: GenerationSettings, negatives=None, batch_size=8, **kw):
        return generate_batch(self.key, conversations, settings, batch_size, negatives)

    def warm(self, messages: Messages) -> None:
        """Nothing: a prefill in the main process has no GPU, and the worker keeps its own cache."""
