"""The one place that decides which engine generates: `load_engine` builds one for a model spec
(local transformers, batched when the model allows, or a server at `engine_url`); `engine_loader`
says where the app's engines live (this process, a child process per version, or ZeroGPU).

    engine = load_engine(EngineConfig(model="default"))
    pool = EnginePool(cfg, loader=engine_loader(cfg.model_process, cfg.device, cfg.model_threads))
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from engines import zerogpu  # first: on ZeroGPU it imports `spaces` before torch is used
from engines.batched import BatchedEngine, batchable
from engines.config import EngineConfig
from engines.engine import ChatEngine, TransformersEngine
from engines.loading import load_model_and_tokenizer, pick_device, resolve_version

log = logging.getLogger(__name__)

Loader = Callable[[EngineConfig], ChatEngine]


def load_engine(cfg: EngineConfig) -> ChatEngine:
    """The engine for `cfg`: a base model (`default`, a folder, a .gguf, a hub id), a trained
    version by name, or a base plus `adapter`; served by `cfg.engine_url` when it is set
    (`engines.remote`). The one way the product loads a model to chat with."""
    if cfg.engine_url:
        from engines.remote import load_remote_engine  # imports openai: only when asked for

        return load_remote_engine(cfg)
    model, adapter = resolve_version(cfg.model, cfg.adapter, cfg.runs_dir)
    hf_model, tokenizer = load_model_and_tokenizer(
        model, adapter, dtype=cfg.dtype, device=cfg.device, cpu_bf16=cfg.cpu_bf16
    )
    if model != cfg.model:  # a version: show its name rather than base + adapter path
        name = cfg.model
    else:
        name = f"default ({Path(hf_model.config.name_or_path).name})" if model == "default" else model
        name = name if adapter is None else f"{name} + {adapter}"
    engine_class = TransformersEngine
    if cfg.batching == "auto":
        if batchable(hf_model):
            engine_class = BatchedEngine
        else:
            log.info("%s has sliding-window or linear-attention layers: chats are not batched", name)
    return engine_class(hf_model, tokenizer, name, cfg.max_context_tokens, cfg.prefix_cache_tokens)


def engine_loader(where: Literal["auto", "child", "app"] = "auto", device: str = "auto", threads: int | None = None,
                  nice: int | None = None) -> Loader:  # fmt: skip
    """How the app's pool loads a version: under @spaces.GPU on ZeroGPU; in a child process of its
    own (`where="child"`; "auto" picks it on CPU, where generation would otherwise hold the app's
    interpreter lock: engines/child.py); or in this process ("app", and for a server at `engine_url`,
    which is its own process already)."""
    if zerogpu.ON_ZERO_GPU:

        def on_gpu(cfg: EngineConfig) -> ChatEngine:
            # One GPU call per reply: a batch thread outside `@spaces.GPU` would have no GPU to run on.
            cfg = cfg.model_copy(update={"batching": "off"})
            return zerogpu.GPUEngine(load_engine(cfg), cfg.model_dump_json(), load_engine)

        return on_gpu
    if where == "auto":
        where = "child" if pick_device(device) == "cpu" and sys.platform != "win32" else "app"
    if where == "app":
        return load_engine
    from engines.child import MODEL_NICE, ProcessEngine

    def in_child(cfg: EngineConfig) -> ChatEngine:
        return load_engine(cfg) if cfg.engine_url else ProcessEngine(cfg, MODEL_NICE if nice is None else nice, threads)

    return in_child
