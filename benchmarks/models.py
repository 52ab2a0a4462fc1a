"""Models the benchmarks build themselves: random weights, since speed depends on shapes only.

`model_source(spec)` is what a benchmark hands to the product (and to its bare alternative) as
the model name: a spec the product understands (`default`, a folder, a hub id) unchanged, or
the folder of a built model, which borrows the default model's tokenizer and chat template.
Built folders are cached in the temp dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY = "tiny"  # for --quick
LLAMA_1B_SHAPED = "llama-1b-shaped"  # for the GPU training comparison
LLAMA_8B_SHAPED = "llama-8b-shaped"  # Llama-3-8B's config, for the 8B throughput (CUDA, ~16 GB in bf16)
SHAPES = {
    # tests/conftest.py's tiny_model_dir: ~1.6 M parameters, milliseconds per token.
    TINY: dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.2),
    # Llama-3.2-1B: 1.24 B parameters with tied embeddings.
    LLAMA_1B_SHAPED: dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                          rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    # Meta-Llama-3-8B: 8.03 B parameters, untied embeddings.
    LLAMA_8B_SHAPED: dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                          rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
}  # fmt: skip
DTYPES = {TINY: "float32", LLAMA_1B_SHAPED: "bfloat16", LLAMA_8B_SHAPED: "bfloat16"}


def bench_dir() -> Path:
    return Path(tempfile.gettempdir()) / "persona-studio-bench"


def build(spec: str, folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.default_model import prepare_default_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_default_model())
    config = LlamaConfig(
        **{"vocab_size": len(tokenizer), **SHAPES[spec]},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(getattr(torch, DTYPES[spec])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def model_source(spec: str) -> str:
    """The spec itself, or for `tiny` / `llama-1b-shaped` the folder of that model, built once."""
    if spec not in SHAPES:
        return spec
    out = bench_dir() / spec
    if (out / "config.json").is_file():
        return str(out)
    bench_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bench_dir(), prefix=f".{spec}-"))  # then renamed: never a half folder
    build(spec, tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
