"""One training run: data -> SFTTrainer -> adapter + metrics + plot -> a finished version.

Called by `training/train.py` after the backend is chosen (and Unsloth imported first).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from core.errors import DatasetError, TrainingError
from core.versions import ADAPTER_DIR, CONFIG_FILE, DATA_FILE, METRICS_FILE, VERSION_FILE
from corpus.examples import Example
from corpus.mix import load_training_data
from training.backends import load_for_training, trainable_parameters
from training.config import TrainConfig, trl_config
from training.records import to_records
from training.sequences import conversation_chats, conversation_records

log = logging.getLogger("training")


def load_data(cfg: TrainConfig) -> tuple[list[Example], list[Example], dict]:
    """(train examples, validation examples, the data record for data.json): one source or a
    weighted mix (`corpus/mix.py`)."""
    train, validation, data_info = load_training_data(cfg.data, cfg.validation.max_examples)
    if not train:
        raise DatasetError(
            f"the train split of {cfg.data.path} has no usable examples ({data_info['rows']} rows read)",
            "check the file and --data.speakers, or give more conversations (--data.limit, --data.split_fractions)",
        )
    # eval refuses to score turns a version was trained on: it checks these ids.
    data_info["train_conversation_ids"] = sorted({ex.conversation_id for ex in train})
    log.info("data: train %d examples, validation %d", len(train), len(validation))
    return train, validation, data_info


# SFTConfig fields the product sets from elsewhere in TrainConfig: a recipe's `sft` section may not.
def sft_args(cfg: TrainConfig, partial: Path, has_validation: bool, batching: dict | None = None):
    """`SFTConfig(**cfg.sft, ...)`: the section passed whole (any SFTConfig field), the product's
    defaults where the section is silent, the derived fields, then `batching`'s overrides
    (`training/batching.py`). A field TRL does not know fails here as a `ConfigError`."""
    from trl import SFTConfig

    sft = {**cfg.sft.model_dump(), **(batching or {})}
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    bf16 = not cpu and cfg.model.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    early_stopping = has_validation and cfg.validation.early_stopping_patience is not None
    defaults = {
        # TRL's defaults turn bf16 on; on CPU it is ~20x slower (gradient checkpointing is the recipe's choice).
        "bf16": bf16,
        "eval_strategy": "steps" if has_validation else "no",
        "eval_on_start": has_validation,  # step 0 = the base model's validation loss
        "load_best_model_at_end": early_stopping,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "save_strategy": "steps",
        "logging_first_step": True,
        "disable_tqdm": False,
        "report_to": "none",
        "ddp_find_unused_parameters": False,  # LoRA: every adapter weight is used in every step
    }
    # Records are fitted to max_seq_length already (to_records, training/sequences.py); padding-free
    # batches without packing refuse a max_length they cannot enforce, packing needs one (its bin size).
    unbounded = sft.get("padding_free") and not sft.get("packing")
    derived = {
        "output_dir": str(partial / "checkpoints"),
        "max_steps": cfg.max_steps,
        "seed": cfg.seed,
        "use_cpu": cpu,
        "max_length": None if unbounded else cfg.model.max_seq_length,
        "completion_only_loss": True,
    }
    return trl_config(SFTConfig, "sft", {**defaults, **sft}, derived)


def batching_plan(cfg: TrainConfig, backend: str):
    """The batch layout and attention of this run (`training/batching.py`), logged."""
    from training.batching import log_batching, plan_batching

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    plan = plan_batching(cfg.sft.model_dump(), backend, cuda)
    log_batching(plan, explicit=bool(cfg.sft.model_dump().get("packing") or cfg.sft.padding_free))
    return plan


def check_disk(path: Path, trainable: int) -> None:
    """Two checkpoints (adapter + 2 Adam moments, fp32) plus the adapter, with 100 MB slack."""
    path.mkdir(parents=True, exist_ok=True)
    need = trainable * 4 * 3 * 2 + trainable * 4 + 100 * 2**20
    free = shutil.disk_usage(path).free
    if free < need:
        raise TrainingError(
            f"only {free / 2**20:.0f} MB free in {path}; this run needs about {need / 2**20:.0f} MB",
            "free disk space or point --output.dir at a bigger disk",
        )


def sft_records(cfg: TrainConfig, tokenizer, parent, loaded: tuple | None) -> tuple[list[dict], list[dict], dict]:
    """(train records, validation records, data_info) for SFT: from the dataset file `loaded`
    (`load_data`), or, when that is None, the good answers of the `eval.export_labels --format
    sft` folder at `data.path` (no validation split)."""
    from training.preference import export_data

    if loaded is None:
        rows, data_info, _ = export_data(cfg, tokenizer, parent)
        return rows, [], data_info
    train, validation, data_info = loaded
    if cfg.data.unit == "conversation":
        chats = conversation_chats(train)
        train_records = conversation_records(chats, tokenizer, cfg.model.max_seq_length)
        data_info["train_sequences"] = len(train_records)
    else:
        train_records = to_records(train, tokenizer, cfg.model.max_seq_length)
    data_info["unit"] = cfg.data.unit
    if not train_records:
        raise DatasetError(
            f"none of the {len(train)} train examples fits {cfg.model.max_seq_length} tokens, "
            "even with only the persona, the last message and the reply",
            "raise --model.max_seq_length",
        )
    eval_records = to_records(validation, tokenizer, cfg.model.max_seq_length)
    data_info["left_out_examples"] = {  # too long for max_seq_length even after trimming
        "validation": len(validation) - len(eval_records),
    }
    if cfg.data.unit == "turn":
        data_info["left_out_examples"]["train"] = len(train) - len(train_records)
    if parent is not None:  # a continued version has seen its parent's conversations too
        seen = set(data_info["train_conversation_ids"]) | parent.train_conversation_ids()
        data_info["train_conversation_ids"] = sorted(seen)
    return train_records, eval_records, data_info


def build_trainer(cfg: TrainConfig, backend: str, partial: Path):
    """(the TRL trainer for `cfg.method`, data_info for data.json)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from training.preference import build_preference_trainer, is_export, parent_version, preference_args

    parent = parent_version(cfg)
    plan = batching_plan(cfg, backend)
    # A bad sft/kto/dpo field fails before the data and the model load.
    if cfg.method == "sft":
        sft_args(cfg, partial, True, plan.sft_overrides)
    else:
        preference_args(cfg, partial)
    # A dataset file is read before the model loads, so a bad file fails fast.
    loaded = load_data(cfg) if cfg.method == "sft" and not is_export(cfg.data.path) else None
    model, tokenizer, peft_config = load_for_training(cfg, backend, parent.adapter_dir if parent else None)
    if cfg.method != "sft":
        trainer, data_info, _ = build_preference_trainer(cfg, model, tokenizer, parent, partial)
        return trainer, data_info
    train_records, eval_records, data_info = sft_records(cfg, tokenizer, parent, loaded)
    callbacks = []
    if eval_records and cfg.validation.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.validation.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=sft_args(cfg, partial, bool(eval_records), plan.sft_overrides),
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    return trainer, data_info


def summarize(log_history: list[dict]) -> dict:
    """The numbers a version is compared by: validation loss before/after, train loss, steps."""
    evals = [e for e in log_history if "eval_loss" in e]
    losses = [e["loss"] for e in log_history if "loss" in e]
    final = next((e for e in reversed(log_history) if "train_runtime" in e), {})
    return {
        "base_eval_loss": evals[0]["eval_loss"] if evals and evals[0].get("step") == 0 else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "best_eval_loss": min(e["eval_loss"] for e in evals) if evals else None,
        "first_train_loss": losses[0] if losses else None,
        "last_train_loss": losses[-1] if losses else None,
        "steps": max((e.get("step", 0) for e in log_history), default=0),
        "train_runtime_s": final.get("train_runtime"),
    }


def finish(trainer, cfg: TrainConfig, backend: str, data_info: dict, partial: Path, final: Path) -> None:
    """Write everything into the partial folder, then rename: version.json comes last."""
    from training.plots import save_loss_plot, save_training_log
    from training.preference import drop_reference_adapter, lineage_for

    drop_reference_adapter(trainer.model)
    trainer.save_model(str(partial / ADAPTER_DIR))
    trainer.processing_class.save_pretrained(str(partial / ADAPTER_DIR))
    history = trainer.state.log_history
    metrics = summarize(history)
    save_training_log(history, partial)
    save_loss_plot(history, partial / "loss.png", title=f"{final.name} ({cfg.model.name})")
    (partial / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (partial / DATA_FILE).write_text(json.dumps(data_info, indent=2))
    lineage_for(partial, cfg)
    trainable, total = trainable_parameters(trainer.model)
    version = {
        "base_model": cfg.model.name,
        "method": cfg.method,
        "backend": backend,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "data_sha256": data_info["sha256"],
        "metrics": metrics,
    }
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    (partial / VERSION_FILE).write_text(json.dumps(version, indent=2))
    os.replace(partial, final)
    log.info("model version %s written to %s (loss plot: %s)", final.name, final, final / "loss.png")


def train(cfg: TrainConfig, backend: str, version: str, partial: Path, final: Path) -> None:
    from accelerate import PartialState
    from transformers.trainer_utils import get_last_checkpoint

    state = PartialState()
    if state.is_main_process:
        partial.mkdir(parents=True, exist_ok=True)
        (partial / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    trainer, data_info = build_trainer(cfg, backend, partial)
    trainable, total = trainable_parameters(trainer.model)
    if state.num_processes > 1:
        log.info("distributed over %d processes (%s)", state.num_processes, state.backend)
    log.info(
        "%s backend, %s: %.2f M of %.1f M parameters trainable", backend, cfg.model.name, trainable / 1e6, total / 1e6
    )
    if state.is_main_process:
        check_disk(partial, trainable)
    resume = get_last_checkpoint(str(partial / "checkpoints")) if cfg.output.resume else None
    try:
        trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as err:
        if state.is_main_process and not cfg.output.resume:
            shutil.rmtree(partial, ignore_errors=True)
        raise TrainingError(
            f"training ran out of memory: {str(err).splitlines()[0]}",
            "lower --sft.per_device_train_batch_size (raise --sft.gradient_accumulation_steps to keep the "
            "batch), lower --model.max_seq_length, set --sft.gradient_checkpointing true, or use QLoRA "
            "(--model.load_in_4bit true, CUDA)",
        ) from None
    state.wait_for_everyone()
    if state.is_main_process:
        finish(trainer, cfg, backend, data_info, partial, final)
        if cfg.output.push_to_hub:
            trainer.model.push_to_hub(cfg.output.push_to_hub)
