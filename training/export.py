"""Export a trained version as one standalone model: base + LoRA merged, or GGUF, or on the hub.

    python -m training.export --version ada-v1
    (flags: --runs_dir runs, --out DIR, --gguf q4_k_m (CUDA + Unsloth), --push_to_hub user/name)

The merged folder (default `runs/<version>/merged`) is a plain transformers model in fp32
safetensors with the tokenizer and chat template: `AutoModelForCausalLM.from_pretrained(DIR)`
and `--model DIR` load it with no PEFT. The GGUF folder (`runs/<version>/gguf`) holds the .gguf
file and Ollama's Modelfile (training/gguf.py). Folders are written under a temporary name and
renamed when complete, so a killed export never leaves a folder that looks finished.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.errors import ConfigError, ModelLoadError, PersonaStudioError
from core.versions import BASE, ModelVersion, find_version, list_versions

EXPORT_FILE = "export.json"  # written last into every export: marks it complete and ours to replace


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, description="Trained version to export (a folder name under runs_dir).")
    runs_dir: str = Field("runs", description="Folder of trained model versions.")
    out: str | None = Field(None, description="Output folder (default: runs/<version>/merged, or .../gguf).")
    gguf: str | None = Field(
        None,
        description="Write GGUF with this quantization (q4_k_m, q8_0, f16) through Unsloth: CUDA only, and "
        "llama.cpp's llama-quantize and convert_hf_to_gguf.py in $UNSLOTH_LLAMA_CPP_PATH (default "
        "~/.unsloth/llama.cpp). The adapter is merged into the base's 16-bit weights: a hub base is loaded "
        "from its 16-bit repo (a `-bnb-4bit` one is swapped for it), a download of 2 bytes per parameter "
        "(~16 GB for 8B, ~2.5 GB for 1B) unless it is in the hub cache; a local base folder downloads nothing.",
    )
    push_to_hub: str | None = Field(None, description="Upload the exported folder to this hub repo (user/name).")


def get_version(name: str | None, runs_dir: str) -> ModelVersion:
    """The finished version `name`, or an error that lists the ones there are."""
    trained = [v.name for v in list_versions(runs_dir)[1:]]
    choices = (
        f"trained versions in {runs_dir}: {', '.join(trained)}" if trained else f"{runs_dir} has no trained version"
    )
    if not name or name == BASE:
        problem = "--version is required" if not name else "`base` has no adapter to merge (it is the base model)"
        raise ConfigError(problem, f"pass --version NAME; {choices}")
    version = find_version(name, runs_dir)
    if version is None:
        raise ModelLoadError(f"no trained version {name!r} in {runs_dir}", choices)
    return version


def check_gguf_possible() -> None:
    """Everything a GGUF export needs that is not there, in one error, before anything loads."""
    import torch

    from training.gguf import LLAMA_CPP_FIX, llama_cpp_dir, missing_llama_cpp

    problems, fixes = [], []
    if not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None:
        problems.append("no CUDA GPU" if not torch.cuda.is_available() else "Unsloth is not installed")
        fixes.append(
            "run it on a CUDA machine (pip install -r requirements-gpu.txt), or on CPU export the merged "
            "folder (drop --gguf) and convert it with llama.cpp: python convert_hf_to_gguf.py "
            "runs/<version>/merged --outtype q8_0 (then llama-quantize for q4_k_m)"
        )
    if missing := missing_llama_cpp(llama_cpp_dir()):
        problems += missing
        fixes.append(LLAMA_CPP_FIX.format(dir=llama_cpp_dir()))
    if problems:
        raise ConfigError(
            f"GGUF export needs Unsloth on a CUDA GPU and llama.cpp, and this machine has {'; '.join(problems)}",
            "; and ".join(fixes),
        )


def write_folder(out: Path, write: Callable[[Path], None], info: dict) -> Path:
    """Run `write(tmp)`, add `export.json`, then rename tmp to `out` (replacing an earlier export)."""
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise ConfigError(f"{out} exists and is not an earlier export", "choose another --out, or delete it")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)  # a kill leaves tmp behind; the next export clears it
        raise
    (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def merge_into(version: ModelVersion, out: Path) -> None:
    """Base + adapter with the LoRA update folded into the weights, saved as safetensors."""
    from engines.loading import load_model_and_tokenizer

    # fp32 so the merged weights are W + (alpha/r)·BA without a rounding step; device cpu so
    # the export does not need GPU memory.
    model, tokenizer = load_model_and_tokenizer(
        version.base_model, str(version.adapter_dir), dtype="float32", device="cpu"
    )
    if hasattr(model, "peft_config"):  # attach_adapter leaves quantized bases unmerged
        raise ConfigError(
            f"the base {version.base_model} is quantized, so the adapter cannot be merged into it exactly",
            "export against a full-precision copy of the base, or use --gguf on a CUDA machine",
        )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload `folder` to the model repo `repo_id` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # Hub errors are OSErrors (offline, auth, HTTP status) or ValueErrors (bad repo id); a failed
    # connection raises the HTTP client's own base error, which HfHubHTTPError also subclasses.
    failures = (OSError, ValueError, *HfHubHTTPError.__bases__)
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"Upload {folder.name}")
    except failures as err:
        raise PersonaStudioError(
            f"could not push {folder} to the hub repo {repo_id}: {type(err).__name__}: {str(err).splitlines()[0]}",
            "check the network (unset HF_HUB_OFFLINE), log in (`hf auth login` or HF_TOKEN), "
            "and the repo id (user/name)",
        ) from None
    return commit.commit_url


def folder_size(folder: Path) -> str:
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"{size / 1e6:.1f} MB"


def export(cfg: ExportConfig) -> Path:
    version = get_version(cfg.version, cfg.runs_dir)
    if cfg.gguf:
        check_gguf_possible()
    out = Path(cfg.out) if cfg.out else version.run_dir / ("gguf" if cfg.gguf else "merged")
    info = {
        "version": version.name,
        "base_model": version.base_model,
        "format": f"gguf-{cfg.gguf}" if cfg.gguf else "safetensors",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if cfg.gguf:
        # export_gguf imports unsloth before anything here has imported transformers.
        from training.gguf import export_gguf

        print(f"merging {version.name} into the 16-bit weights of {version.base_model} for GGUF")
        write_folder(out, lambda tmp: export_gguf(version, tmp, cfg.gguf), info)
    else:
        write_folder(out, lambda tmp: merge_into(version, tmp), info)
    print(f"exported {version.name} to {out} ({folder_size(out)})")
    if cfg.push_to_hub:
        print(f"pushed to {push_folder(out, cfg.push_to_hub)}")
    return out


@entry_point(ExportConfig, __doc__)
def main(cfg: ExportConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    export(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
