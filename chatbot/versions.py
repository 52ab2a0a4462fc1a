"""Model versions: `base` plus one per finished training run in `runs/<version>/`.

A finished run folder holds `version.json` (written last, so its presence means the run is
complete), `adapter/` (the LoRA weights), `config.yaml`, `data.json`, `metrics.json` and
the loss plot. Unfinished runs live in `runs/.partial-<version>/` and are never listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.default_model import DEFAULT_MODEL
from chatbot.errors import ModelLoadError

BASE = "base"
VERSION_FILE = "version.json"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    base_model: str  # model spec the adapter was trained on (`default`, a folder or a hub id)
    adapter_dir: Path | None = None  # None for `base`
    run_dir: Path | None = None
    created: str = ""
    info: dict = field(default_factory=dict)  # the rest of version.json (metrics, backend, ...)


def read_version(run_dir: Path) -> ModelVersion:
    data = json.loads((run_dir / VERSION_FILE).read_text())
    return ModelVersion(
        name=run_dir.name,
        base_model=data["base_model"],
        adapter_dir=run_dir / "adapter",
        run_dir=run_dir,
        created=data.get("created", ""),
        info=data,
    )


def list_versions(runs_dir: str | Path = "runs", base_model: str = DEFAULT_MODEL) -> list[ModelVersion]:
    """`base` first, then finished runs, newest first."""
    runs = Path(runs_dir)
    found = [read_version(p.parent) for p in runs.glob(f"*/{VERSION_FILE}") if not p.parent.name.startswith(".")]
    found.sort(key=lambda v: v.created, reverse=True)
    return [ModelVersion(name=BASE, base_model=base_model), *found]


def find_version(name: str, runs_dir: str | Path = "runs") -> ModelVersion | None:
    """The finished version called `name`, or None if there is no such run folder."""
    run_dir = Path(runs_dir) / name
    if (run_dir / VERSION_FILE).is_file():
        return read_version(run_dir)
    if (Path(runs_dir) / f".partial-{name}").is_dir():
        raise ModelLoadError(
            f"model version {name} did not finish training (only runs/.partial-{name} exists)",
            f"resume it: python -m training.train --output.version {name} --output.resume true",
        )
    return None


def newest_version(runs_dir: str | Path = "runs") -> ModelVersion | None:
    """The most recently finished fine-tuned version, if any."""
    versions = list_versions(runs_dir)
    return versions[1] if len(versions) > 1 else None
