"""Two ways to get a LoRA-ready model, one interface: `load_for_training(cfg, backend)`.

- `unsloth` (CUDA): `FastLanguageModel` with its kernels and gradient checkpointing; the
  returned model already carries the LoRA adapter (see `training/unsloth_backend.py`).
- `trl` (anywhere): transformers + PEFT; the adapter is added by `SFTTrainer` from the
  returned `LoraConfig`, 4-bit QLoRA through bitsandbytes on CUDA when asked.
"""

from __future__ import annotations

import logging

import torch

from chatbot.loading import from_pretrained, pick_device, pick_dtype
from training.config import TrainConfig, check_hardware

log = logging.getLogger(__name__)


def resolve_backend(cfg: TrainConfig) -> str:
    """`unsloth` or `trl`. Unsloth is chosen by `auto` only when it is installed and a GPU is
    present; it is never imported here (it must be imported before transformers)."""
    import importlib.util

    cuda = torch.cuda.is_available() and not cfg.device.startswith("cpu")
    check_hardware(cfg, cuda)
    if cfg.backend != "auto":
        return cfg.backend
    return "unsloth" if cuda and importlib.util.find_spec("unsloth") else "trl"


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_trl(cfg: TrainConfig):
    """(model, tokenizer, LoraConfig) for transformers + PEFT + TRL."""
    from transformers import BitsAndBytesConfig

    kwargs = {}
    if cfg.model.load_in_4bit:
        dtype = pick_dtype(cfg.model.dtype, pick_device(cfg.device))
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    model, tokenizer = from_pretrained(cfg.model.name, cfg.model.dtype, cfg.device, **kwargs)
    return model, tokenizer, lora_config(cfg)


def load_for_training(cfg: TrainConfig, backend: str):
    """(model, tokenizer, peft_config or None when the model already has its adapter)."""
    if backend == "unsloth":
        from training.unsloth_backend import load_unsloth

        model, tokenizer = load_unsloth(cfg)
        return model, tokenizer, None
    return load_trl(cfg)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
