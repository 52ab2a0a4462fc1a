"""Training on raters' labels: `--from_version` (continue a version's adapter) and the data an
`eval.export_labels` folder holds, for `--method kto|dpo|sft`.

- The parent: its base model and its LoRA adapter, loaded trainable; the LoRA shape is the
  parent's (the `lora:` section does not apply).
- The reference model of KTO / DPO is the parent itself: TRL, given a PeftModel and no
  `ref_model`, keeps a frozen copy of the adapter ("ref") and scores the reference with it,
  so no second model is loaded. The copy is dropped before the adapter is saved.
- `lineage.json` of the new version records the parent and the export's item ids, vote ids
  and prompt keys (`core.versions.write_lineage`); eval skips those prompts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from core.errors import ConfigError, DatasetError
from core.versions import BASE, ModelVersion, find_version, list_versions, write_lineage
from corpus.examples import Example
from training.config import TrainConfig, trl_config
from training.records import chat_tokens, fit_example

log = logging.getLogger("training")

MANIFEST_FILE = "manifest.json"  # eval.export_labels writes it (no import: that pulls in the store)
DATASET_DIR = "dataset"
REPLY_COLUMNS = {"kto": ("completion",), "sft": ("completion",), "dpo": ("chosen", "rejected")}


def parent_version(cfg: TrainConfig) -> ModelVersion | None:
    """The version `--from_version` names (None without it), checked before anything loads."""
    if not cfg.from_version:
        if cfg.method != "sft":  # a recipe may name the method; the version comes on the command line
            raise ConfigError(
                f"--method {cfg.method} continues a trained version, and no --from_version was given",
                "pass --from_version NAME (train one first with --method sft)",
            )
        return None
    if cfg.from_version == BASE:
        raise ConfigError(
            "--from_version base has no adapter to continue",
            f"train an SFT version first (--method sft), then pass it; --method {cfg.method} needs one",
        )
    parent = find_version(cfg.from_version, cfg.output.dir)
    if parent is None:
        names = ", ".join(v.name for v in list_versions(cfg.output.dir)[1:]) or "none yet"
        raise ConfigError(
            f"there is no model version {cfg.from_version!r} in {cfg.output.dir}",
            f"pick one of: {names} (or set --output.dir to the folder that holds it)",
        )
    return parent


def with_parent(cfg: TrainConfig, parent: ModelVersion) -> TrainConfig:
    """`cfg` on the parent's base model: the adapter only fits the model it was trained on."""
    if cfg.model.name not in (parent.base_model, TrainConfig().model.name):
        raise ConfigError(
            f"--model.name {cfg.model.name} differs from {parent.name}'s base model {parent.base_model}",
            "drop --model.name: a version continues on the base model its adapter was trained on",
        )
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": parent.base_model})})


def is_export(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_FILE).is_file()


def load_export(cfg: TrainConfig) -> tuple[list[dict], dict]:
    """(rows, manifest) of the `eval.export_labels` folder at `data.path`, made for `cfg.method`."""
    from datasets import load_from_disk

    path = Path(cfg.data.path)
    fix = f"export one: python -m eval.export_labels --format {cfg.method} --out DIR, then --data.path DIR"
    if not is_export(path):
        raise DatasetError(f"--method {cfg.method} needs an eval.export_labels folder; {path} is not one", fix)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    if manifest.get("format") != cfg.method:
        raise DatasetError(f"{path} holds {manifest.get('format')} data, not {cfg.method}", fix)
    rows = load_from_disk(str(path / DATASET_DIR)).to_list()
    if not rows:
        raise DatasetError(f"{path} has no rows", fix)
    return rows, manifest


def fit_rows(rows: list[dict], method: str, tokenizer, max_seq_length: int) -> list[dict]:
    """The rows with each prompt cut by the product's one trimming rule (as `training.records.to_records`)
    so prompt + the longest reply fit `max_seq_length`; rows that cannot fit are left out."""

    def reply(row: dict) -> str:
        return max((row[c][0]["content"] for c in REPLY_COLUMNS[method]), key=len)

    examples = [Example("export", "assistant", 0, row["prompt"], reply(row)) for row in rows]
    totals = chat_tokens(tokenizer, [ex.chat() for ex in examples])
    fitted, left_out = [], 0
    for row, example, total in zip(rows, examples, totals, strict=True):
        prompt = row["prompt"] if total <= max_seq_length else fit_example(example, tokenizer, max_seq_length)
        if prompt is None:
            left_out += 1
            continue
        fitted.append(row | {"prompt": list(prompt)})
    if left_out:
        log.info("%d of %d rows do not fit %d tokens even with the oldest turns dropped: left out",
                 left_out, len(rows), max_seq_length)  # fmt: skip
    return fitted


def export_data(cfg: TrainConfig, tokenizer, parent: ModelVersion | None) -> tuple[list[dict], dict, dict]:
    """(fitted rows, data_info for data.json, the export's manifest)."""
    rows, manifest = load_export(cfg)
    fitted = fit_rows(rows, cfg.method, tokenizer, cfg.model.max_seq_length)
    if not fitted:
        raise DatasetError(
            f"none of the {len(rows)} rows of {cfg.data.path} fits {cfg.model.max_seq_length} tokens",
            "raise --model.max_seq_length",
        )
    data_info = {
        "path": str(Path(cfg.data.path).resolve()),
        "format": f"export-{cfg.method}",
        "sha256": manifest["fingerprint"],
        "rows": len(rows),
        "train_examples": len(fitted),
        "validation_examples": 0,
        "left_out_examples": {"train": len(rows) - len(fitted), "validation": 0},
        # The child has seen what its parent was trained on: eval must keep refusing those turns.
        "train_conversation_ids": sorted(parent.train_conversation_ids()) if parent else [],
    }
    return fitted, data_info, manifest


def lineage_for(run_dir: Path, cfg: TrainConfig) -> None:
    """Write `lineage.json` when the version continues another or learned from raters' labels."""
    export = is_export(cfg.data.path)
    if not export and not cfg.from_version:
        return
    manifest = json.loads((Path(cfg.data.path) / MANIFEST_FILE).read_text()) if export else {}
    write_lineage(
        run_dir,
        parent=cfg.from_version,
        method=cfg.method,
        data_path=str(Path(cfg.data.path).resolve()),
        data_fingerprint=manifest.get("fingerprint", ""),
        counts=manifest.get("counts", {}),
        item_ids=manifest.get("item_ids", []),
        preference_ids=manifest.get("preference_ids", []),
        prompt_keys=manifest.get("prompt_keys", []),
    )


def preference_args(cfg: TrainConfig, partial: Path):
    """`KTOConfig(**kto, ...)` / `DPOConfig(**dpo, ...)`: the section whole, plus what is derived."""
    from trl import DPOConfig, KTOConfig

    config_class, section = (KTOConfig, cfg.kto) if cfg.method == "kto" else (DPOConfig, cfg.dpo)
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    bf16 = not cpu and cfg.model.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    derived = dict(
        output_dir=str(partial / "checkpoints"),
        max_steps=cfg.max_steps,
        seed=cfg.seed,
        use_cpu=cpu,
        max_length=cfg.model.max_seq_length,  # rows are fitted already (fit_rows): nothing is truncated
    )
    defaults = dict(
        bf16=bf16,  # TRL turns bf16 on by default: ~20x slower on CPU
        eval_strategy="no",
        save_strategy="steps",
        logging_first_step=True,
        disable_tqdm=False,
        ddp_find_unused_parameters=False,
    )
    return trl_config(config_class, cfg.method, {**defaults, **section.model_dump()}, derived)


def build_preference_trainer(cfg: TrainConfig, model, tokenizer, parent: ModelVersion, partial: Path):
    """(KTOTrainer or DPOTrainer on the parent's trainable adapter, data_info, manifest)."""
    from datasets import Dataset
    from trl import DPOTrainer, KTOTrainer

    rows, data_info, manifest = export_data(cfg, tokenizer, parent)
    if cfg.method == "kto":
        good = sum(row["label"] for row in rows)
        log.info("KTO on %d answers: %d good, %d bad", len(rows), good, len(rows) - good)
    trainer_class = KTOTrainer if cfg.method == "kto" else DPOTrainer
    trainer = trainer_class(
        model=model,
        ref_model=None,  # the parent: TRL keeps a frozen copy of its adapter as the reference
        args=preference_args(cfg, partial),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer, data_info, manifest


def drop_reference_adapter(model) -> None:
    """Delete TRL's frozen reference copy ("ref") so only the trained adapter is saved."""
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
