"""`TrainConfig`: everything a fine-tuning run needs, from YAML recipes with CLI overrides.

Recipes in `training/recipes/*.yaml` hold only the keys they change. Each section is named
and shaped after the API it feeds and is passed to it whole, so a field added to a section
reaches that API with no other edit:

- `lora.*`  -> `peft.LoraConfig(**lora, task_type="CAUSAL_LM")` (and Unsloth's `get_peft_model`)
- `sft.*`, `max_steps`, `seed` -> `trl.SFTConfig(**sft, ...)` (TRL's fields + transformers
  `TrainingArguments`), beside the fields the product derives itself (`training/trainer.py`)
- `data.*`  -> `corpus.examples.DataConfig` (for `--method kto|dpo`, or an export folder from
  `eval.export_labels`: the folder)
- `kto.*` / `dpo.*`, `max_steps`, `seed` -> `trl.KTOConfig(**kto, ...)` / `trl.DPOConfig(**dpo, ...)`
  for `--method kto|dpo`, which continue `--from_version`'s adapter (`training/preference.py`)

No torch/transformers import here: the Unsloth backend must be imported before transformers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.default_model import DEFAULT_MODEL
from core.errors import ConfigError
from corpus.examples import DataConfig


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPart(_Part):
    """The base model and how it is loaded (`engines.loading.from_pretrained`, or Unsloth's
    `FastLanguageModel.from_pretrained`)."""

    name: str = Field(DEFAULT_MODEL, description="Base model: `default`, a local folder, or a hub id.")
    max_seq_length: int = Field(
        512, ge=16, description="Tokens per example (prompt + reply); the oldest turns are dropped to fit."
    )
    load_in_4bit: bool = Field(False, description="QLoRA: load the base in 4-bit (CUDA only).")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16.")


class LoraPart(_Part):
    """`peft.LoraConfig` fields under their PEFT names, passed whole: `LoraConfig(**lora,
    task_type="CAUSAL_LM")`; Unsloth's `FastLanguageModel.get_peft_model` takes the same keys."""

    r: int = Field(16, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = lora_alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers that get adapters (all Llama linears by default).",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train (Llama has none).")


class SftPart(BaseModel):
    """`trl.SFTConfig` fields (TRL's own and transformers `TrainingArguments`) under their
    upstream names, passed whole: `SFTConfig(**sft, <output_dir, use_cpu, max_length, ...:
    derived by training/trainer.py>)`. ANY SFTConfig field may be set in a recipe (`packing`,
    `packing_strategy`, `train_sampling_strategy`, `neftune_noise_alpha`, ...); it is checked by
    building TRL's config before the model loads. Declared here, with a command-line flag each,
    are only the fields whose product default differs from TRL's (and the batch knobs the error
    messages name)."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (TRL: 2e-5, for full fine-tuning).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (cosine, linear, constant).")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, adamw_8bit, ...).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Sequences per step per device.")
    per_device_eval_batch_size: int | None = Field(
        None, ge=1, description="Validation examples per forward (None = per_device_train_batch_size)."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (Unsloth: its offloaded kind).")
    padding_free: bool | None = Field(
        None,
        description="Padding-free batches (needs a varlen attention kernel: training/batching.py); "
        "None = off with TRL, Unsloth decides itself.",
    )
    eval_steps: int = Field(25, ge=1, description="Validation loss every N optimizer steps.")
    logging_steps: int = Field(5, ge=1, description="Log the training loss every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (for resume and early stopping).")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept on disk (None = all).")

    @model_validator(mode="after")
    def _eval_batch(self) -> SftPart:
        if self.per_device_eval_batch_size is None:  # eval memory then matches what training fits
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        return self


# TRL fields the product sets itself (from other keys): a section must not set them.
DERIVED = {
    "output_dir": "output.dir",
    "max_steps": "max_steps (top level)",
    "seed": "seed (top level)",
    "use_cpu": "device",
    "max_length": "model.max_seq_length",
    "completion_only_loss": "nothing: the loss is on the replies only",
}


def trl_config(config_class: type, section: str, values: dict, derived: dict):
    """`config_class(**values, **derived)` (TRL's SFTConfig, KTOConfig or DPOConfig): a section's
    field TRL does not know, or one the product derives, fails as a ConfigError naming it."""
    if taken := sorted(set(values) & set(DERIVED)):
        raise ConfigError(
            f"{section}.{taken[0]} is set by the product, not the {section} section",
            f"remove it from {section} and set {DERIVED[taken[0]]}",
        )
    try:
        return config_class(**values, **derived)
    except TypeError as err:  # an unknown keyword: name it
        name = str(err).rsplit("'", 2)[-2] if "'" in str(err) else str(err)
        raise ConfigError(
            f"{section}.{name} is not a trl.{config_class.__name__} field",
            f"fix its spelling; TRL's {config_class.__name__} docs list the fields",
        ) from None
    except ValueError as err:
        raise ConfigError(f"TRL refused the {section} section: {err}", f"fix the {section} values it names") from None


class PreferencePart(_Part):
    """What `trl.KTOConfig` and `trl.DPOConfig` share (TRL's and transformers `TrainingArguments`
    fields), under their upstream names. The learning rate is LoRA's (TRL's 1e-6 default is for
    full fine-tuning: a LoRA adapter barely moves at it). Any other field of TRL's config may be set
    in a recipe too (checked when the config is built, `trl_config`)."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (higher: less).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name (cosine, linear, constant).")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, adamw_8bit, ...).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Examples per step per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    precompute_ref_log_probs: bool = Field(
        False, description="Reference log-probs once before training (one pass; the steps then skip it)."
    )
    logging_steps: int = Field(1, ge=1, description="Log loss and rewards every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (for resume).")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept on disk (None = all).")
    report_to: str | list[str] = Field("none", description="none, tensorboard, wandb, or a list of them.")


class KtoPart(PreferencePart):
    """`trl.KTOConfig` fields, passed whole: `KTOConfig(**kto, <derived by training/preference.py>)`."""

    # KTO's KL estimate pairs each prompt with another example's completion in the same batch.
    per_device_train_batch_size: int = Field(4, ge=2, description="Examples per step (KTO's KL term needs >= 2).")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="kto, or apo_zero_unpaired.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of good answers' losses (balance the counts).")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of bad answers' losses.")


class DpoPart(PreferencePart):
    """`trl.DPOConfig` fields, passed whole: `DPOConfig(**dpo, <derived by training/preference.py>)`."""

    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], description="DPO loss(es): sigmoid, ipo, ...")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust/conservative DPO label noise.")


class ValidationPart(_Part):
    """The validation split during training (what `SFTConfig` has no field for)."""

    max_examples: int = Field(200, ge=1, description="Cap the validation examples (each eval costs time).")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without improvement and keep the best checkpoint."
    )


class OutputPart(_Part):
    """Where the model version is written, and where it goes afterwards."""

    dir: str = Field("runs", description="Folder that holds one sub-folder per model version.")
    version: str | None = Field(None, description="Version name (default: <model>-<timestamp>).")
    resume: bool = Field(False, description="Resume the unfinished run named by output.version.")
    push_to_hub: str | None = Field(None, description="Hub repo id to push the adapter to (needs network).")


class TrainConfig(_Part):
    method: Literal["sft", "kto", "dpo"] = Field(
        "sft", description="sft (a dataset), or kto / dpo on raters' labels (eval.export_labels), from_version on."
    )
    from_version: str | None = Field(
        None, description="Continue this version's adapter (its base model and LoRA shape); needed by kto / dpo."
    )
    backend: Literal["auto", "unsloth", "trl"] = Field("auto", description="auto = unsloth on CUDA, trl elsewhere.")
    max_steps: int = Field(-1, description="Optimizer steps (SFTConfig.max_steps); -1 = run num_train_epochs.")
    seed: int = Field(42, description="Seed for LoRA init, shuffling and dropout (SFTConfig.seed).")
    device: str = Field("auto", description="auto, cpu, cuda.")
    model: ModelPart = Field(default_factory=ModelPart)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraPart = Field(default_factory=LoraPart)
    sft: SftPart = Field(default_factory=SftPart)
    kto: KtoPart = Field(default_factory=KtoPart)
    dpo: DpoPart = Field(default_factory=DpoPart)
    validation: ValidationPart = Field(default_factory=ValidationPart)
    output: OutputPart = Field(default_factory=OutputPart)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.lora.r <= 0:
            raise ValueError(f"lora.r must be a positive rank, got {self.lora.r}: use e.g. --lora.r 16")
        if self.output.resume and not self.output.version:
            raise ValueError("output.resume needs output.version: name the run to resume")
        sft = self.sft
        # Early stopping reloads the best evaluated checkpoint, so every evaluation must have one
        # (transformers refuses load_best_model_at_end otherwise, after the model is loaded).
        if self.validation.early_stopping_patience and sft.save_steps % sft.eval_steps:
            raise ValueError(
                f"early stopping needs a checkpoint at every evaluation, but sft.save_steps ({sft.save_steps}) "
                f"is not a multiple of sft.eval_steps ({sft.eval_steps}): set e.g. --sft.save_steps {sft.eval_steps}"
            )
        return self


def check_hardware(cfg: TrainConfig, cuda: bool) -> None:
    """Contradictions that depend on the machine, caught before any model is loaded."""
    if cfg.model.load_in_4bit and not cuda:
        raise ConfigError(
            "model.load_in_4bit (QLoRA) was requested but there is no CUDA GPU",
            "drop --model.load_in_4bit (plain LoRA works on CPU) or run on a CUDA machine",
        )
    if cfg.backend == "unsloth" and not cuda:
        raise ConfigError("backend unsloth needs a CUDA GPU", "use --backend trl (or auto) on this machine")
