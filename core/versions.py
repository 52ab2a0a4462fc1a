"""Model versions: `base` plus one per finished training run in `runs/<version>/`. The one
module that knows what a version's folder holds.

A finished run folder holds `version.json` (written last, so its presence means the run is
complete), `adapter/` (the LoRA weights), `config.yaml`, `data.json` (the data fingerprint and
the training conversation ids), `metrics.json` and the loss plot; evaluation and regression
runs add `eval/<timestamp>/` and `regress/<timestamp>/` (also for `base`). Unfinished runs live
in `runs/.partial-<version>/` and are never listed.

Versions can also live on the Hugging Face Hub (how a Space gets them: its disk holds no
runs): `PERSONA_STUDIO_HUB_VERSIONS="persona-v2=user/persona-v2-lora,user/other-lora"` lists
adapter repos (`name=repo`, or the repo alone, named after it), each a LoRA adapter on the
app's base model (`core.default_model.base_model`), downloaded by PEFT on first use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from core.default_model import DEFAULT_MODEL, base_model
from core.errors import ModelLoadError

BASE = "base"
VERSION_FILE = "version.json"
ADAPTER_DIR = "adapter"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
# Written by `training.train --method kto|dpo|sft --from_version P`: where the version came from
# and which human labels trained it (eval and the scorecard keep those prompts out of scoring).
LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    base_model: str  # model spec the adapter was trained on (`default`, a folder or a hub id)
    adapter_dir: Path | None = None  # None for `base`
    run_dir: Path | None = None
    created: str = ""
    info: dict = field(default_factory=dict)  # the rest of version.json (metrics, backend, ...)
    hub_repo: str | None = None  # a version on the hub: its adapter repo (no run folder here)

    @property
    def adapter(self) -> str | None:
        """What PEFT loads: the hub repo id, or the adapter folder (None for `base`)."""
        return self.hub_repo or (str(self.adapter_dir) if self.adapter_dir else None)

    def train_conversation_ids(self) -> set[str]:
        """Ids of the conversations it was trained on (eval refuses to score those turns)."""
        data = self.run_dir / DATA_FILE if self.run_dir else None
        if data is None or not data.is_file():
            return set()
        return set(json.loads(data.read_text()).get("train_conversation_ids", []))

    def lineage(self) -> dict:
        """`lineage.json`, or {} for `base` and versions trained from a dataset alone. Keys:
        `parent` (version name), `method` (sft | kto | dpo), `data_path`, `data_fingerprint`,
        `counts` (rows per kind), `item_ids` (label items whose labels trained it),
        `preference_ids` (A/B votes that trained it), `prompt_keys` (store.records.prompt_key
        of every prompt it was trained on)."""
        path = self.run_dir / LINEAGE_FILE if self.run_dir else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}

    @property
    def parent(self) -> str | None:
        """The version this one continued from (None: trained from the base model)."""
        return self.lineage().get("parent")


def read_version(run_dir: Path) -> ModelVersion:
    data = json.loads((run_dir / VERSION_FILE).read_text())
    return ModelVersion(
        name=run_dir.name,
        base_model=data["base_model"],
        adapter_dir=run_dir / ADAPTER_DIR,
        run_dir=run_dir,
        created=data.get("created", ""),
        info=data,
    )


def list_versions(runs_dir: str | Path = "runs", base_model: str = DEFAULT_MODEL) -> list[ModelVersion]:
    """`base` first, then finished runs, newest first."""
    runs = Path(runs_dir)
    found = [read_version(p.parent) for p in runs.glob(f"*/{VERSION_FILE}") if not p.parent.name.startswith(".")]
    found.sort(key=lambda v: v.created, reverse=True)
    on_disk = {v.name for v in found}
    hub = [v for v in hub_versions() if v.name not in on_disk]  # a run folder of the same name wins
    return [ModelVersion(name=BASE, base_model=base_model), *found, *hub]


def hub_versions(spec: str | None = None) -> list[ModelVersion]:
    """The adapter repos in `spec` (default $PERSONA_STUDIO_HUB_VERSIONS), in its order."""
    spec = os.environ.get("PERSONA_STUDIO_HUB_VERSIONS", "") if spec is None else spec
    versions = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, repo = entry.rpartition("=")
        repo = repo.strip()
        name = name.strip() or repo.rstrip("/").rsplit("/", 1)[-1]
        if not repo or name == BASE:
            raise ModelLoadError(
                f"PERSONA_STUDIO_HUB_VERSIONS has a bad entry {entry!r}",
                "list `name=user/adapter-repo` entries separated by commas (a name other than `base`)",
            )
        versions.append(ModelVersion(name=name, base_model=base_model(), hub_repo=repo))
    return versions


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
    return next((v for v in hub_versions() if v.name == name), None)


def partial_dir(runs_dir: str | Path, name: str) -> Path:
    """Where an unfinished run of version `name` is written (renamed to `runs/<name>` when done)."""
    return Path(runs_dir) / f".partial-{name}"


def results_dir(runs_dir: str | Path, name: str, kind: Literal["eval", "regress"]) -> Path:
    """A new folder path `runs/<name>/<kind>/<timestamp>/` for one evaluation or regression run
    of version `name` (a suffix keeps two runs in one second apart). Not created here."""
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    out, n = Path(runs_dir) / name / kind / stamp, 2
    while out.exists():
        out, n = out.with_name(f"{stamp}-{n}"), n + 1
    return out


def results_files(runs_dir: str | Path, kind: Literal["eval", "regress"], file: str) -> list[Path]:
    """`file` of every evaluation or regression run of every version under `runs_dir`."""
    return sorted(Path(runs_dir).glob(f"*/{kind}/*/{file}"))


def write_lineage(
    run_dir: Path,
    *,
    parent: str | None,
    method: str,
    data_path: str,
    data_fingerprint: str,
    counts: dict,
    item_ids: list[int],
    preference_ids: list[int],
    prompt_keys: list[str],
) -> Path:
    """Write `lineage.json` into a (partial) run folder with exactly the keys `lineage()` reads."""
    lineage = {
        "parent": parent,
        "method": method,
        "data_path": data_path,
        "data_fingerprint": data_fingerprint,
        "counts": counts,
        "item_ids": sorted(item_ids),
        "preference_ids": sorted(preference_ids),
        "prompt_keys": sorted(prompt_keys),
    }
    path = Path(run_dir) / LINEAGE_FILE
    path.write_text(json.dumps(lineage, indent=2))
    return path


def ancestors(version: ModelVersion, runs_dir: str | Path) -> list[ModelVersion]:
    """The version, its parent, the parent's parent, ... (what a child has been trained on
    includes all of theirs). A missing parent folder ends the chain."""
    chain, seen = [version], {version.name}
    while (parent := chain[-1].parent) and parent not in seen:
        found = find_version(parent, runs_dir)
        if found is None:
            break
        chain.append(found)
        seen.add(parent)
    return chain
