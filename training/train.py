"""Fine-tune a LoRA adapter on persona-chat turns; the result is a new model version.

    python -m training.train --config training/recipes/smollm2-135m-lora-cpu.yaml
    python -m training.train --config training/recipes/llama3-8b-qlora-unsloth.yaml \\
        --data.path /data/Synthetic-Persona-Chat_train.csv --lora.r 32 --max_steps 2000
    accelerate launch --num_processes 2 -m training.train --config ...   # several GPUs (or CPU/gloo)
    python -m training.train --config training/recipes/smollm2-135m-kto-cpu.yaml \\
        --from_version my-sft --data.path exports/kto-1      # raters' labels (eval.export_labels)

The loss is on the persona's reply only (TRL prompt-completion data). `--method kto|dpo`
continues `--from_version`'s adapter on an `eval.export_labels` folder (KTOTrainer /
DPOTrainer, the parent as the reference) and records the parent and the labels used in
`runs/<version>/lineage.json`. The run writes
`runs/.partial-<version>/` and renames it to `runs/<version>/` only when everything is saved,
so an interrupted run never looks like a finished version (resume it with
`--output.version NAME --output.resume true`).
"""

from __future__ import annotations

import errno
import logging
import shutil
import sys
from datetime import datetime
from pathlib import Path

from core.cli import entry_point
from core.errors import ConfigError, PersonaStudioError
from core.versions import partial_dir
from training.config import TrainConfig

log = logging.getLogger("training")


def default_version_name(cfg: TrainConfig) -> str:
    """<model>-<timestamp>, or <parent>-<method>-<timestamp> for a continued version."""
    if cfg.from_version:
        return f"{cfg.from_version}-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
    stem = Path(cfg.model.name.rstrip("/")).name.lower().replace("_", "-") or "model"
    return f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def agreed_version_name(cfg: TrainConfig) -> str:
    """One name for all processes of a distributed run: the main process decides."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # The first PartialState fixes the distributed setup for the process (the Trainer's too):
    # on CPU it must be told, or each process under a launcher would train alone (gloo needs cpu=True).
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    name = [cfg.output.version or default_version_name(cfg)]
    if PartialState(cpu=cpu).num_processes > 1:
        broadcast_object_list(name)
    return name[0]


def prepare_folders(cfg: TrainConfig, version: str) -> tuple[Path, Path]:
    """(partial folder to write into, final folder), checked against what exists."""
    runs = Path(cfg.output.dir)
    final, partial = runs / version, partial_dir(runs, version)
    if final.exists():
        raise ConfigError(f"model version {version} already exists at {final}", "pick another --output.version")
    if cfg.output.resume and not (partial / "checkpoints").is_dir():
        raise ConfigError(f"there is no unfinished run {version} to resume in {runs}", "drop --output.resume")
    if partial.exists() and not cfg.output.resume:
        raise ConfigError(
            f"an unfinished run {version} exists at {partial}",
            f"resume it with --output.resume true, or delete {partial}",
        )
    return partial, final


def _drop_if_empty(partial: Path | None) -> None:
    """Remove a partial run folder that holds no checkpoint: nothing there to resume."""
    if (
        partial is not None
        and partial.name.startswith(".partial-")
        and not any(partial.glob("checkpoints/checkpoint-*"))
    ):
        shutil.rmtree(partial, ignore_errors=True)


@entry_point(TrainConfig, __doc__)
def main(cfg: TrainConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    version, partial = "NAME", None
    try:
        from training.backends import resolve_backend

        backend = resolve_backend(cfg)
        if backend == "unsloth":
            from training.unsloth_backend import fast_language_model

            fast_language_model()  # imports unsloth, which patches transformers/TRL: must come before them

        from training.preference import parent_version, with_parent
        from training.trainer import train

        if (parent := parent_version(cfg)) is not None:
            cfg = with_parent(cfg, parent)
        version = agreed_version_name(cfg)
        partial, final = prepare_folders(cfg, version)
        train(cfg, backend, version, partial, final)
    except PersonaStudioError:
        _drop_if_empty(partial)
        raise  # @entry_point prints it
    except KeyboardInterrupt:
        print(f"\ninterrupted: resume with --output.version {version} --output.resume true", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        if partial is not None and partial.name.startswith(".partial-"):
            shutil.rmtree(partial, ignore_errors=True)
        print(
            f"error: no disk space left while writing {partial or 'the run folder'}\n"
            "  fix: free space or set --output.dir",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
