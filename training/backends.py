"""Two ways to get a LoRA-ready model, one interface: `load_for_training(cfg, backend)`.

- `unsloth` (CUDA): `FastLanguageModel` with its kernels and gradient checkpointing; the
  returned model already carries the LoRA adapter (see `training/unsloth_backend.py`).
- `trl` (anywhere): transformers + PEFT; the adapter is added by `SFTTrainer` from the
  returned `LoraConfig`, 4-bit QLoRA through bitsandbytes on CUDA when asked.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from core.errors import ConfigError
from engines.loading import from_pretrained, pick_device, pick_dtype
from training.config import TrainConfig, check_hardware

log = logging.getLogger(__name__)


def resolve_backend(cfg: TrainConfig) -> str:
    """`unsloth` or `trl`. Unsloth is chosen by `auto` only when it is installed and a GPU is
    present; it is never imported here (it must be imported before transformers)."""
    cuda = torch.cuda.is_available() and not cfg.device.startswith("cpu")
    check_hardware(cfg, cuda)
    installed = importlib.util.find_spec("unsloth") is not None
    if cfg.backend == "unsloth" and not installed:
        raise ConfigError(
            "backend unsloth was requested but Unsloth is not installed",
            "pip install unsloth (CUDA only; it pins its own transformers and trl versions), or use --backend trl",
        )
    if cfg.backend != "auto":
        return cfg.backend
    return "unsloth" if cuda and installed else "trl"


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(**cfg.lora.model_dump(), task_type="CAUSAL_LM")


def device_map(cfg: TrainConfig) -> dict | None:
    """`{"": this process's GPU}` on CUDA, so the weights load straight onto it (not into CPU
    memory first; bitsandbytes quantises as they land). Under `accelerate launch` each process
    takes the GPU of its LOCAL_RANK. None on CPU."""
    device = pick_device(cfg.device)
    if not device.startswith("cuda"):
        return None
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return {"": device}


def load_trl(cfg: TrainConfig):
    """(model, tokenizer, LoraConfig) for transformers + PEFT + TRL."""
    from transformers import BitsAndBytesConfig

    from training.batching import plan_batching

    kwargs = {}
    cuda = pick_device(cfg.device).startswith("cuda")
    if (attention := plan_batching(cfg.sft.model_dump(), "trl", cuda).attn_implementation) is not None:
        kwargs["attn_implementation"] = attention  # a varlen kernel for packed batches
    if (placement := device_map(cfg)) is not None:
        kwargs["device_map"] = placement
    if cfg.model.load_in_4bit:
        dtype = pick_dtype(cfg.model.dtype, pick_device(cfg.device))
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    model, tokenizer = from_pretrained(cfg.model.name, cfg.model.dtype, cfg.device, **kwargs)
    return model, tokenizer, lora_config(cfg)


def load_for_training(cfg: TrainConfig, backend: str, adapter_dir: Path | None = None):
    """(model, tokenizer, peft_config or None when the model already has its adapter).
    With `adapter_dir` (`--from_version`) the model carries that adapter, trainable."""
    if backend == "unsloth":
        from training.unsloth_backend import load_unsloth

        model, tokenizer = load_unsloth(cfg, adapter_dir)
        return model, tokenizer, None
    model, tokenizer, peft_config = load_trl(cfg)
    if adapter_dir is None:
        return model, tokenizer, peft_config
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True), tokenizer, None


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts. A PeftModel counts itself: under QLoRA a 4-bit
    weight is stored packed (two values per byte), so summing `numel()` would halve it."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
