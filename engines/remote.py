"""Any OpenAI-compatible server as the engine: `transformers serve`, vLLM, llama.cpp's server.

    transformers serve ~/.cache/persona-studio/models/SmolLM2-135M-Instruct --port 8011
    python -m chatbot.chat --engine_url http://localhost:8011

The messages go to `/v1/chat/completions` as they are (the persona is the system message) and
the server applies its chat template. The history is trimmed here, with the base model's own
tokenizer (loaded alone, no weights) and the same rule as in-process, so a long chat keeps the
same turns whichever engine answers. `load_engine(cfg)` builds this engine when
`cfg.engine_url` is set; nothing else in the product needs to know.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import openai
from tqdm.auto import tqdm

from core.conversation import Messages
from core.default_model import DEFAULT_MODEL, HUB_ID, default_model_dir, tokenizer_source
from core.errors import ConfigError, GenerationError, ModelLoadError, PersonaStudioError
from core.versions import BASE
from engines.config import EngineConfig, GenerationSettings
from engines.engine import ChatEngine, prompt_tokens
from engines.loading import resolve_model, resolve_version

log = logging.getLogger(__name__)
# The openai client's HTTP library logs every request at INFO, the level eval.run logs at.
for _name in ("httpx", "httpx2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

API_KEY_ENV = "PERSONA_STUDIO_ENGINE_API_KEY"
FALLBACK_WINDOW = 2048  # tokens, when neither the model config nor the tokenizer says
# Sampling settings outside the OpenAI schema; vLLM takes them, `transformers serve` refuses them (422).
EXTRA_PARAMS = ("top_k", "repetition_penalty")


def request_params(settings: GenerationSettings, max_tokens: int | None = None) -> dict:
    """`chat.completions.create` keyword arguments for `settings`; non-OpenAI ones in `extra_body`.
    `max_tokens` caps the reply (the room the prompt leaves in the context window)."""
    params = {
        "temperature": settings.temperature,  # 0 is greedy on vLLM, llama.cpp and transformers serve
        "top_p": settings.top_p,
        "max_tokens": min(settings.max_new_tokens, max_tokens or settings.max_new_tokens),
    }
    if settings.seed is not None:
        params["seed"] = settings.seed
    extra = {}
    if settings.temperature > 0 and settings.top_k > 0:  # greedy ignores top_k
        extra["top_k"] = settings.top_k
    if settings.repetition_penalty != 1.0:
        extra["repetition_penalty"] = settings.repetition_penalty
    return {**params, "extra_body": extra} if extra else params


def api_base(url: str) -> str:
    """The client's base URL: a server's root (`http://host:8011`) or its `/v1` both work."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class OpenAIEngine(ChatEngine):
    """Chat completions from a server; token counts from the local tokenizer of its base model."""

    batches = True  # vLLM, llama.cpp's server and `transformers serve --continuous-batching` batch requests

    def __init__(
        self, client: openai.OpenAI, model: str, tokenizer, name: str, context_window: int, offered: list[str] | None
    ):
        self.client = client
        self.model = model  # the name the server knows it by
        self.offered = offered  # what its /v1/models listed at load; None where it did not answer
        self.tokenizer = tokenizer
        self.name = name
        self.context_window = context_window
        self.url = str(client.base_url).rstrip("/")
        self.send_extra = True  # top_k / repetition_penalty, until the server refuses them
        self.said_unguided = False  # the log line that a switch's negative prompt is dropped, said once

    def count_tokens(self, messages: Messages) -> int:
        return prompt_tokens(self.tokenizer, messages)

    def _params(self, messages: Messages, settings: GenerationSettings) -> dict:
        """The request for `messages` fitted to the window, the reply capped to the room left."""
        fitted = self.fit_messages(messages, settings)
        room = max(1, self.context_window - fitted.tokens)  # counted once, by the fit
        return {"model": self.model, "messages": fitted, **request_params(settings, room)}

    def _create(self, params: dict, **kw):
        if not self.send_extra:
            params = {k: v for k, v in params.items() if k != "extra_body"}
        try:
            return self.client.chat.completions.create(**params, **kw)
        except openai.APIStatusError as err:
            refused = [k for k in EXTRA_PARAMS if k in detail(err)]
            if err.status_code not in (400, 422) or not refused or "extra_body" not in params:
                raise
            log.warning("the model server at %s does not take %s: replies are made without them", self.url, refused)
            self.send_extra = False
            return self._create(params, **kw)

    def _unguided(self, negative) -> None:
        """OpenAI-compatible chat APIs take no negative prompt: after a persona switch a server's
        replies are not steered away from the old persona (said once)."""
        if negative is not None and not self.said_unguided:
            self.said_unguided = True
            log.info("the model server takes no negative prompt: replies after a persona switch are not guided")

    def stream(
        self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
    ) -> Iterator[str]:
        self._unguided(negative)
        params = self._params(messages, settings)
        try:
            chunks = self._create(params, stream=True)
        except openai.APIError as err:
            raise explain(err, self, GenerationError) from err
        try:
            for chunk in chunks:
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except openai.APIError as err:
            raise explain(err, self, GenerationError, mid_reply=True) from err
        finally:
            chunks.close()  # the consumer stopped, or the reply ended: the server stops generating

    def _reply(self, params: dict) -> str:
        try:
            completion = self._create(params)
        except openai.APIError as err:
            raise explain(err, self, GenerationError) from err
        return (completion.choices[0].message.content or "").strip()

    def generate(
        self,
        conversations: list[Messages],
        settings: GenerationSettings,
        negatives: list[Messages] | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ) -> list[str]:
        """`batch_size` requests at a time (the server batches them as it can); replies in order."""
        self._unguided(negatives)
        requests = [self._params(m, settings) for m in conversations]  # a too-long message fails before any request
        with ThreadPoolExecutor(max_workers=max(1, min(batch_size, len(requests)))) as pool:
            futures = [pool.submit(self._reply, params) for params in requests]
            try:
                return [f.result() for f in tqdm(futures, desc="generating", unit="reply", disable=not progress)]
            finally:
                for future in futures:
                    future.cancel()  # after a failure, send no more requests

    def check_model(self) -> None:
        """Fail now, not at the first chat, when the server is down or does not serve the model.
        `/v1/models` says what it serves where it answers; a one-token request tells the rest,
        and whether the server takes top_k and repetition_penalty (warned about here, not mid-chat)."""
        if self.offered is not None and self.model not in self.offered:
            raise ModelLoadError(
                f"the model server at {self.url} does not serve model {self.model!r}; "
                f"it offers: {', '.join(self.offered)}",
                "pass --model with one of those (a version name, a folder or a hub id as the server names it)",
            )
        probe = {"model": self.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        try:
            self._create({**probe, "extra_body": {"top_k": 1, "repetition_penalty": 1.0}})
        except openai.APIError as err:
            raise explain(err, self, ModelLoadError) from err


def served_models(client: openai.OpenAI) -> list[str] | None:
    """The model ids `/v1/models` lists, or None when it does not answer with a list
    (`transformers serve` answers 500 there without a hub cache). A server that cannot be
    reached at all raises `APIConnectionError`: that is no answer to skip over."""
    # A client of its own: `transformers serve` drops the connection after its 500 there, and a
    # shared pool would hand that dead connection to the next request.
    own = openai.OpenAI(base_url=client.base_url, api_key=client.api_key, timeout=client.timeout, max_retries=0)
    try:
        with own:
            return [m.id for m in own.models.list()]
    except openai.APIStatusError as err:
        log.info("GET %smodels answered %s: cannot list what it serves", client.base_url, err.status_code)
        return None
    except openai.APIConnectionError as err:
        raise ModelLoadError(*_unreachable(str(client.base_url).rstrip("/"), err, None)) from err


def detail(err) -> str:
    """What the server said: OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail"}`, or the status."""
    body = err.body
    if isinstance(body, dict):
        found = body.get("detail") or body.get("message") or (body.get("error") or {})
        found = found.get("message") if isinstance(found, dict) else found
        if found:
            return str(found)
    return str(err.message)


def _unreachable(url: str, err: Exception, model: str | None) -> tuple[str, str]:
    port = urlparse(url).port or 8000
    serve = f"transformers serve {model or 'MODEL_FOLDER'} --port {port}"
    cause = err.__cause__ or err
    return f"cannot reach the model server at {url}: {cause}", f"start it (`{serve}`) or fix --engine_url"


def explain(err: openai.APIError, engine: OpenAIEngine, kind: type[PersonaStudioError], mid_reply: bool = False):
    """The server's error as one a user can act on (`kind`: ModelLoadError at load time)."""
    url, model = engine.url, engine.model
    if isinstance(err, openai.APITimeoutError):
        return kind(
            f"the model server at {url} did not answer in time ({engine.client.timeout} s)",
            "raise --engine_timeout, or lower max_new_tokens / the load on the server",
        )
    if isinstance(err, openai.APIConnectionError):
        if mid_reply:
            return kind(
                f"lost the model server at {url} in the middle of a reply: {err.__cause__ or err}",
                "check that the server still runs (restart it if it died), then send the message again",
            )
        return kind(*_unreachable(url, err, model))
    status = getattr(err, "status_code", None)
    if status in (401, 403):
        return kind(
            f"the model server at {url} refused the API key ({status}): {detail(err)}",
            f"pass --engine_api_key or set {API_KEY_ENV}",
        )
    if status == 404 or (status == 400 and model in detail(err)):
        listing = (
            f"it offers: {', '.join(engine.offered)}"
            if engine.offered is not None
            else "its /v1/models does not answer with a list, so what it serves is not known here"
        )
        return kind(
            f"the model server at {url} does not know model {model!r} ({detail(err)}); {listing}",
            "pass --model with the name the server serves (for `transformers serve FOLDER`, that FOLDER as typed)",
        )
    return kind(f"the model server at {url} failed ({status or 'no status'}): {detail(err)}", "see the server's log")


def _served_name(cfg: EngineConfig) -> tuple[str, str]:
    """(the name the server knows the model by, the local base model whose tokenizer counts)."""
    if cfg.adapter:
        raise ConfigError(
            "--adapter cannot be sent to a model server",
            "serve the adapter there (e.g. vLLM --lora-modules NAME=DIR) and pass --model NAME",
        )
    base, _ = resolve_version(cfg.model, None, cfg.runs_dir)
    if base != cfg.model and cfg.model not in (BASE, DEFAULT_MODEL):  # a trained version
        return cfg.model, base
    return (str(default_model_dir()) if base == DEFAULT_MODEL else base), base


def _default_name(offered: list[str], folder: str) -> str:
    """The default model's served name: the folder `transformers serve` was given, or the hub id
    or only model that `/v1/models` lists."""
    for name in (folder, HUB_ID):
        if name in offered:
            return name
    return offered[0] if len(offered) == 1 else folder


def load_tokenizer(base: str):
    """(tokenizer, native context window in tokens) of a base model spec, without its weights."""
    from transformers import AutoTokenizer

    source, extra = tokenizer_source() if base == DEFAULT_MODEL else resolve_model(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except OSError as err:
        raise ModelLoadError(
            f"could not load the tokenizer of {base!r} (it counts tokens for the server): {str(err).splitlines()[0]}",
            "pass --model with a base model available here (a folder, a cached hub id, `default`, a trained version)",
        ) from None
    config = Path(source) / "config.json"
    native = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
    if native is None and tokenizer.model_max_length < 1_000_000:  # larger is transformers' "unknown"
        native = tokenizer.model_max_length
    return tokenizer, native


def load_remote_engine(cfg: EngineConfig) -> OpenAIEngine:
    """The engine for `cfg.engine_url`: checked at once, so a bad URL or model fails here."""
    served, base = _served_name(cfg)
    tokenizer, native = load_tokenizer(base)
    window = min(native, cfg.max_context_tokens) if native and cfg.max_context_tokens else native
    client = openai.OpenAI(
        base_url=api_base(cfg.engine_url),
        api_key=cfg.engine_api_key or os.environ.get(API_KEY_ENV) or "none",  # servers without auth ignore it
        timeout=cfg.engine_timeout,
        max_retries=cfg.engine_max_retries,
    )
    offered = served_models(client)
    if base == DEFAULT_MODEL and served == str(default_model_dir()):
        served = _default_name(offered or [], served)
    window = window or cfg.max_context_tokens or FALLBACK_WINDOW
    engine = OpenAIEngine(client, served, tokenizer, f"{cfg.model} via {cfg.engine_url}", window, offered)
    engine.check_model()
    return engine
