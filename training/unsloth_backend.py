"""Unsloth backend (CUDA only): load a base with Unsloth's kernels and put LoRA on it.

Unsloth patches transformers, TRL and PEFT when it is first imported, and warns (and loses
some speed-ups) if they were imported before it. This module imports unsloth only inside its
functions, so it can be imported anywhere (and on CPU machines, where `import unsloth` raises);
the caller that picks this backend must therefore run `import unsloth` *before* anything
imports transformers, trl or peft, e.g. first thing in the training entry point when
`backend` resolves to unsloth. Local folders load offline with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError
from engines.loading import resolve_model
from training.config import TrainConfig


def fast_language_model():
    """`unsloth.FastLanguageModel`, or a `ConfigError` saying why it cannot be had here."""
    try:
        from unsloth import FastLanguageModel
    except ImportError:
        raise ConfigError(
            "Unsloth is not installed",
            "pip install unsloth on a CUDA machine (it pins its own transformers and trl versions), "
            "or use --backend trl",
        ) from None
    except NotImplementedError:  # unsloth's import raises this when there is no GPU
        raise ConfigError("Unsloth needs a CUDA GPU and this machine has none", "use --backend trl") from None
    return FastLanguageModel


def unsloth_dtype(dtype: str):
    """None lets Unsloth pick (bf16 where supported, else fp16)."""
    import torch

    return None if dtype == "auto" else getattr(torch, dtype)


def _base_source(spec: str) -> str:
    source, extra = resolve_model(spec)
    if extra.get("gguf_file"):
        raise ConfigError(
            f"Unsloth cannot train on the GGUF file {spec}",
            "pass a Hugging Face folder or hub id as --model.name (`default` is already converted)",
        )
    return source


def load_unsloth(cfg: TrainConfig, adapter_dir: Path | None = None):
    """(PEFT model with fresh LoRA adapters, tokenizer) as configured by `cfg`; with
    `adapter_dir` (`--from_version`), the base with that trained adapter instead (Unsloth
    reads the base model from the adapter's config), ready to train on."""
    FastLanguageModel = fast_language_model()
    if adapter_dir is not None:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(adapter_dir),
            max_seq_length=cfg.model.max_seq_length,
            load_in_4bit=cfg.model.load_in_4bit,
            dtype=unsloth_dtype(cfg.model.dtype),
        )
        return FastLanguageModel.for_training(model), tokenizer
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=_base_source(cfg.model.name),
        max_seq_length=cfg.model.max_seq_length,
        load_in_4bit=cfg.model.load_in_4bit,
        dtype=unsloth_dtype(cfg.model.dtype),
    )
    model = FastLanguageModel.get_peft_model(
        model,
        **cfg.lora.model_dump(),  # the same keys as peft.LoraConfig
        # "unsloth" offloads activations to CPU memory: ~30% less VRAM than plain checkpointing.
        use_gradient_checkpointing="unsloth" if cfg.sft.gradient_checkpointing else False,
        random_state=cfg.seed,
    )
    return model, tokenizer
