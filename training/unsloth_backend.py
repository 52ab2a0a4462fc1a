"""Unsloth backend (CUDA only): load a base with Unsloth's kernels, put LoRA on it, export GGUF.

Unsloth patches transformers, TRL and PEFT when it is first imported, and warns (and loses
some speed-ups) if they were imported before it. This module imports unsloth only inside its
functions, so it can be imported anywhere (and on CPU machines, where `import unsloth` raises);
the caller that picks this backend must therefore run `import unsloth` *before* anything
imports transformers, trl or peft, e.g. first thing in the training entry point when
`backend` resolves to unsloth. Local folders load offline with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from chatbot.errors import ConfigError
from chatbot.loading import resolve_model
from chatbot.versions import read_version
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


def load_unsloth(cfg: TrainConfig):
    """(PEFT model with fresh LoRA adapters, tokenizer) as configured by `cfg`."""
    FastLanguageModel = fast_language_model()
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


def export_gguf(version_dir: str | Path, out_dir: str | Path, quantization: str = "q4_k_m") -> Path:
    """Merge a trained version (base + adapter) and write it as GGUF into `out_dir`.

    Unsloth loads an adapter folder by reading the base from `adapter_config.json`; we point
    that at the base recorded in `version.json`, so a run trained on `default` or on a folder
    that has since moved still finds its base. Unsloth runs llama.cpp for the conversion (it
    builds llama.cpp on first use, which needs the network unless llama.cpp is already there).
    """
    FastLanguageModel = fast_language_model()
    version = read_version(Path(version_dir))
    with tempfile.TemporaryDirectory(prefix="persona-studio-adapter-") as tmp:
        adapter_dir = Path(tmp) / "adapter"
        shutil.copytree(version.adapter_dir, adapter_dir)
        config_file = adapter_dir / "adapter_config.json"
        adapter_config = json.loads(config_file.read_text())
        adapter_config["base_model_name_or_path"] = _base_source(version.base_model)
        config_file.write_text(json.dumps(adapter_config, indent=2))
        # 16-bit base: merging LoRA into 4-bit weights would round the merged weights twice.
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(adapter_dir), load_in_4bit=False)
        model.save_pretrained_gguf(str(out_dir), tokenizer, quantization_method=quantization)
    return Path(out_dir)
