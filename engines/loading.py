"""Resolve a model spec (default / folder / .gguf / hub id), load it, put an adapter on top.

No transformers import at module level: training imports this before it decides whether
Unsloth (which must be imported before transformers) is the backend. `engines.factory.load_engine`
builds an engine from an `EngineConfig`.

Every failure a user can cause (a path that is not there, a folder that is not a model, an
adapter trained on another base, no network for a hub id) ends in a `ModelLoadError` that
says what to do.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

from core.default_model import (
    DEFAULT_MODEL,
    GGUF_PACKAGE,
    HUB_ID,
    drop_gguf_marker,
    on_space,
    prepare_default_model,
)
from core.errors import ModelLoadError
from core.versions import BASE, find_version
from engines.config import cpu_has_bf16

log = logging.getLogger(__name__)


def resolve_version(model: str, adapter: str | None, runs_dir: str) -> tuple[str, str | None]:
    """(base model, adapter) for a model spec that may name a trained version or `base`."""
    if model == BASE:
        return DEFAULT_MODEL, adapter
    version = find_version(model, runs_dir)
    if version is None:
        return model, adapter
    if adapter:
        raise ModelLoadError(
            f"--model {model} is a trained version (it has its own adapter) and --adapter was given too",
            "pass either a version name or --model BASE --adapter DIR",
        )
    return version.base_model, version.adapter


def resolve_model(model: str) -> tuple[str, dict]:
    """(`from_pretrained` argument, extra kwargs) for a model spec."""
    if model in (DEFAULT_MODEL, ""):
        if on_space() and importlib.util.find_spec(GGUF_PACKAGE) is None:
            # A Space installs requirements.txt only: the same model from the hub (versions
            # trained on `default` load on it; its weights are the GGUF's before quantisation).
            return HUB_ID, {}
        return str(prepare_default_model()), {}
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist", "check the path")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is a LoRA adapter, not a base model",
                f"pass it as --adapter {path} and its base model as --model",
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a model folder (no config.json in it)",
                "pass a folder written by save_pretrained, a .gguf file, a hub id, or `default`",
            )
        return str(path), {}
    # A hub id is "name" or "org/name"; anything else that is not on disk is a missing path.
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(
            f"model path {model} does not exist",
            "check the path, or pass a hub id like unsloth/llama-3-8b-Instruct-bnb-4bit, or `default`",
        )
    return model, {}


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str, cpu_bf16: bool = False) -> torch.dtype:
    """`auto`: bf16 on GPU; fp32 on CPU (training in bf16 there is far slower; ../shared/STACK.md),
    unless `cpu_bf16` and the CPU has bf16 instructions (chats: `ChatEngineConfig`)."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") or (cpu_bf16 and cpu_has_bf16()) else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise ModelLoadError(f"unknown dtype {dtype!r}", "use auto, float32, bfloat16 or float16") from None


def from_pretrained(model: str, dtype: str = "auto", device: str = "auto", cpu_bf16: bool = False, **model_kwargs):
    """(model, tokenizer) for a model spec, with what every loader needs: a de-quantised GGUF
    base made a normal dense model, and a pad token for batching (eos when the tokenizer has
    none). `model_kwargs` go to `AutoModelForCausalLM.from_pretrained` (quantization_config,
    device_map, ...). The model stays where `from_pretrained` put it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, extra = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=pick_dtype(dtype, pick_device(device), cpu_bf16), **extra, **model_kwargs
        )
    except OSError as err:
        raise ModelLoadError(
            f"could not load model {model!r}: {str(err).splitlines()[0]}",
            "check the id or path; without network (HF_HUB_OFFLINE=1) only local folders and "
            "already-cached hub models load; `default` always works offline",
        ) from None
    if extra.get("gguf_file"):
        drop_gguf_marker(hf_model)
    if tokenizer.pad_token is None:  # batching needs one; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return hf_model, tokenizer


def load_model_and_tokenizer(
    model: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto", cpu_bf16: bool = False
):
    """Load (model, tokenizer) ready for generation on `device`, the adapter merged in when possible."""
    hf_model, tokenizer = from_pretrained(model, dtype, device, cpu_bf16)
    if adapter:
        hf_model = attach_adapter(hf_model, adapter, model)
    return hf_model.to(pick_device(device)), tokenizer


def adapter_folder(adapter: str) -> Path:
    """The local folder of an adapter given as a folder or as a hub repo id ("user/repo", a
    version listed in PERSONA_STUDIO_HUB_VERSIONS), downloaded once into the hub cache."""
    path = Path(adapter).expanduser()
    if path.exists() or adapter.startswith((".", "/", "~")) or adapter.count("/") != 1:
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(adapter))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ModelLoadError(
            f"could not download adapter {adapter!r} from the hub: {str(err).splitlines()[0]}",
            "check the repo id (a private repo needs HF_TOKEN with read access) and the network",
        ) from None


def attach_adapter(hf_model, adapter: str, model_name: str):
    """Put a PEFT LoRA adapter on `hf_model`; merge it unless the base is quantized."""
    from peft import PeftModel

    adapter_dir = adapter_folder(adapter)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"adapter folder {adapter_dir} has no adapter_config.json",
            "pass a folder written by training (runs/<version>/adapter) or by PeftModel.save_pretrained",
        )
    trained_on = json.loads(config_file.read_text()).get("base_model_name_or_path") or "an unknown base"
    mismatch = ModelLoadError(
        f"adapter {adapter_dir} does not fit model {model_name!r}: it was trained on {trained_on}",
        f"load it with the base it was trained on (--model {trained_on})",
    )
    base_name = getattr(hf_model.config, "name_or_path", "") or ""
    if Path(str(trained_on)).name != Path(base_name).name:
        log.warning("adapter base %s differs from model %s; shapes decide if it loads", trained_on, base_name)
    try:
        peft_model = PeftModel.from_pretrained(hf_model, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as err:
        raise mismatch from err
    if getattr(hf_model, "is_quantized", False) or getattr(hf_model, "hf_quantizer", None):
        return peft_model  # merging into 4-bit weights would lose precision
    return peft_model.merge_and_unload()
