"""`TrainConfig`: everything a fine-tuning run needs, from YAML recipes with CLI overrides.

Recipes in `training/recipes/*.yaml` hold only the keys they change. Field names follow the
API each part feeds: `lora.*` -> `peft.LoraConfig`, `optim.*` / `max_steps` ->
`trl.SFTConfig` (transformers `TrainingArguments`), `data.*` -> `corpus.examples.DataConfig`.
No torch/transformers import here: the Unsloth backend must be imported before transformers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatbot.default_model import DEFAULT_MODEL
from chatbot.errors import ConfigError
from corpus.examples import DataConfig


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPart(_Part):
    name: str = Field(DEFAULT_MODEL, description="Base model: `default`, a local folder, or a hub id.")
    max_seq_length: int = Field(
        512, ge=16, description="Tokens per example; longer ones are cut from the left context."
    )
    load_in_4bit: bool = Field(False, description="QLoRA: load the base in 4-bit (CUDA only).")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16.")


class LoraPart(_Part):
    r: int = Field(16, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers that get adapters (all Llama linears by default).",
    )


class OptimPart(_Part):
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (cosine, linear, constant).")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, adamw_8bit, ...).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Examples per step per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps > 0).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    padding_free: bool = Field(False, description="Padding-free batches (flash-attention backends).")
    train_sampling_strategy: str = Field(
        "random", description="random, or group_by_length: batches of similar length pad less (faster steps)."
    )


class EvalPart(_Part):
    eval_steps: int = Field(25, ge=1, description="Validation loss every N optimizer steps.")
    max_eval_examples: int = Field(200, ge=1, description="Cap the validation examples (eval costs time).")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after N evals without improvement.")


class OutputPart(_Part):
    dir: str = Field("runs", description="Folder that holds one sub-folder per model version.")
    version: str | None = Field(None, description="Version name (default: <model>-<timestamp>).")
    logging_steps: int = Field(5, ge=1, description="Log the training loss every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (for resume).")
    resume: bool = Field(False, description="Resume the unfinished run named by output.version.")
    report_to: list[str] = Field(default_factory=list, description="tensorboard, wandb, ... (none by default).")
    push_to_hub: str | None = Field(None, description="Hub repo to push the adapter to (needs network).")


class TrainConfig(_Part):
    backend: Literal["auto", "unsloth", "trl"] = Field("auto", description="auto = unsloth on CUDA, trl elsewhere.")
    max_steps: int = Field(-1, description="Optimizer steps; -1 = run num_train_epochs.")
    seed: int = Field(42, description="Seed for LoRA init, shuffling and dropout.")
    device: str = Field("auto", description="auto, cpu, cuda.")
    model: ModelPart = Field(default_factory=ModelPart)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraPart = Field(default_factory=LoraPart)
    optim: OptimPart = Field(default_factory=OptimPart)
    eval: EvalPart = Field(default_factory=EvalPart)
    output: OutputPart = Field(default_factory=OutputPart)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.lora.r <= 0:
            raise ValueError(f"lora.r must be a positive rank, got {self.lora.r}: use e.g. --lora.r 16")
        if self.output.resume and not self.output.version:
            raise ValueError("output.resume needs output.version: name the run to resume")
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
