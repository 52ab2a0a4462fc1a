"""GGUF export through Unsloth (CUDA): merge a version's adapter into 16-bit weights, then
convert and quantize with llama.cpp.

What Unsloth 2026.10.9 does, read from its source (unsloth/save.py, unsloth_zoo/llama_cpp.py):

- `model.save_pretrained_gguf(dir, tokenizer, quantization_method=q)` writes the 16-bit merge
  into `dir` and the .gguf files into the *sibling* folder `dir + "_gguf"` (plus an Ollama
  `Modelfile`), and returns a dict whose `gguf_files` lists the .gguf paths. The first
  conversion is written into the process's working directory and then moved.
- It looks for llama.cpp only in `$UNSLOTH_LLAMA_CPP_PATH` (default `~/.unsloth/llama.cpp`):
  a `llama-quantize` (or `quantize`) at the top of that folder that answers `--help`, and
  `convert_hf_to_gguf.py` beside it. When they are missing it downloads or builds llama.cpp.

So `check_llama_cpp()` looks in the same place before anything is loaded and names what is
missing, and `export_gguf()` points Unsloth at a scratch folder inside the export's partial
folder (working directory included), moves the returned files out and deletes the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from unittest.mock import patch

from core.versions import ModelVersion

QUANTIZER_NAMES = ("llama-quantize", "quantize")  # unsloth_zoo.llama_cpp.check_llama_cpp, non-Windows
CONVERTER_NAMES = ("convert_hf_to_gguf.py", "convert-hf-to-gguf.py")  # LLAMA_CPP_CONVERTER_FILENAMES
LLAMA_CPP_FIX = (
    "with network access, build llama.cpp there: git clone https://github.com/ggml-org/llama.cpp {dir} && "
    "cd {dir} && cmake -B build && cmake --build build --config Release -j --target llama-quantize && "
    "ln -s build/bin/llama-quantize . ; or set UNSLOTH_LLAMA_CPP_PATH to a llama.cpp folder with "
    "llama-quantize and convert_hf_to_gguf.py (and its conversion/ or gguf-py/ folder) at its top"
)


def llama_cpp_dir() -> Path:
    """Where Unsloth looks for llama.cpp (unsloth_zoo.llama_cpp.LLAMA_CPP_DEFAULT_DIR)."""
    default = Path.home() / ".unsloth" / "llama.cpp"
    return Path(os.environ.get("UNSLOTH_LLAMA_CPP_PATH", default)).expanduser()


def _runs(binary: Path) -> bool:
    """Unsloth's test of a quantizer: executable, and `--help` exits 0 or prints a usage line."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return False
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, errors="replace", timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 or "usage" in (done.stdout + done.stderr).lower()


def missing_llama_cpp(folder: Path) -> list[str]:
    """What Unsloth would download because it is not in `folder`; empty when the export can
    run offline."""
    if not folder.is_dir():
        return [f"llama.cpp is not at {folder} (the folder does not exist)"]
    missing = []
    if not any(_runs(folder / name) for name in QUANTIZER_NAMES):
        built = folder / "build" / "bin" / "llama-quantize"
        hint = f" (there is {built}: Unsloth does not look in build/bin, link it to the top)" if built.is_file() else ""
        missing.append(f"no working llama-quantize in {folder}{hint}")
    converter = next((folder / name for name in CONVERTER_NAMES if (folder / name).is_file()), None)
    if converter is None:
        missing.append(f"no convert_hf_to_gguf.py in {folder}")
    elif not (
        all((folder / "conversion" / name).is_file() for name in ("__init__.py", "base.py"))
        or (folder / "gguf-py" / "gguf" / "__init__.py").is_file()
    ):  # without the converter's own package beside it Unsloth fetches matching sources from GitHub
        missing.append(f"{converter.name} in {folder} has neither its conversion/ nor its gguf-py/ folder beside it")
    return missing


def _base_for_merge(version: ModelVersion, adapter_copy: Path) -> Path:
    """Copy the adapter with `base_model_name_or_path` set to the base recorded in
    version.json: Unsloth loads an adapter folder's base from there, and a run trained on
    `default` or on a folder that has since moved must still find it."""
    from training.unsloth_backend import _base_source

    shutil.copytree(version.adapter_dir, adapter_copy)
    config_file = adapter_copy / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = _base_source(version.base_model)
    config_file.write_text(json.dumps(config, indent=2))
    return adapter_copy


def export_gguf(version: ModelVersion, out: Path, quantization: str) -> list[Path]:
    """Write `version` (base + adapter, merged in 16-bit) as GGUF into the empty folder `out`:
    the .gguf files Unsloth reports and its Ollama `Modelfile`. Returns the .gguf paths."""
    from training.unsloth_backend import fast_language_model

    FastLanguageModel = fast_language_model()
    out = out.resolve()  # the conversion runs in another working directory
    scratch = out / ".unsloth"  # the copied adapter, the 16-bit merge, llama.cpp's first file
    merged = scratch / "merged"  # Unsloth writes the .gguf files into merged_gguf/ beside it
    scratch.mkdir()
    # No pip reinstall into this environment if the converter fails, and the converter that
    # missing_llama_cpp() checked rather than one fetched from GitHub (a user's setting wins).
    offline = {k: os.environ.get(k, v) for k, v in (("UNSLOTH_AUTO_INSTALL", "0"), ("UNSLOTH_LLAMA_CPP_OFFLINE", "1"))}
    try:
        adapter = _base_for_merge(version, scratch / "adapter")
        # 16-bit base: merging LoRA into 4-bit weights would round the merged weights twice.
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(adapter), load_in_4bit=False)
        with contextlib.chdir(scratch), patch.dict(os.environ, offline):
            result = model.save_pretrained_gguf(str(merged), tokenizer, quantization_method=quantization)
        files = [Path(f) for f in (result or {}).get("gguf_files") or []]
        if not files or not all(f.is_file() for f in files):
            raise RuntimeError(f"Unsloth's GGUF export reported no files it wrote: {result!r}")
        modelfile = result.get("modelfile_location")
        for path in [*files, *([Path(modelfile)] if modelfile and Path(modelfile).is_file() else [])]:
            shutil.move(path, out / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # also on Ctrl-C: the merge is model-sized
    return [out / f.name for f in files]
