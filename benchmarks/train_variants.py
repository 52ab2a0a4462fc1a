"""One training variant in its own process, timed step by step (the worker of train_throughput).

    python -m benchmarks.train_variants SPEC.json OUT.json

SPEC holds the variant name, the resolved `TrainConfig` (model, data, LoRA, batch, length,
max_steps = warm-up + timed steps) and a scratch folder. A process per variant keeps peak
memory apart and keeps Unsloth's patching of transformers/TRL out of the other variants;
nothing here imports transformers before a variant that needs Unsloth has imported it.

Variants (all fed the same training examples of the same split):
- `product`: `training.trainer.build_trainer` (the recipe's backend: TRL, or Unsloth on CUDA).
- `trl`: a bare TRL script: `SFTTrainer` on chat-template text, `peft_config=LoraConfig`.
- `unsloth`: a bare Unsloth script (`FastLanguageModel`, then `SFTTrainer`), CUDA only.
- `qlora`: transformers `Trainer` + PEFT + bitsandbytes 4-bit, as QLoRA notebooks do, CUDA only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.common import PeakRSS, cuda_sync, max_rss_mb
from training.config import TrainConfig


class StepClock:
    """Times optimizer steps by the gaps between `on_step_end`s, so each step's time holds
    everything the trainer does for it: data fetch and collation, forward, backward, the
    optimizer and the trainer's own logging. Tokens are counted as batches enter
    `training_step`; kept as tensors until the end, so counting never syncs a GPU."""

    def __init__(self, warmup: int):
        self.warmup = warmup  # steps before the timed series starts (>= 1: the first gap needs a start)
        self.ends: list[float] = []
        self.tokens: list[list] = []  # per step: real (non-padding) token counts of its micro-batches
        self.padded: list[int] = []  # per step: tokens including padding (what is computed on)
        self.supervised: list[list] = []  # per step: tokens that carry the loss (labels != -100)
        self.examples: list[int] = []  # per step: sequences (a packed row holds several)
        self._real, self._padded, self._supervised, self._examples = [], 0, [], 0
        self.rss: PeakRSS | None = None
        self.cuda_peak_mb: float | None = None

    def count(self, inputs: dict) -> None:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        self._real.append(mask.sum() if mask is not None else ids.numel())
        self._padded += ids.numel()
        if (labels := inputs.get("labels")) is not None:
            self._supervised.append((labels[:, 1:] != -100).sum())  # shifted: the first token predicts nothing
        positions = inputs.get("position_ids")
        packed = positions is not None and mask is None  # padding-free: sequences start at position 0
        self._examples += int((positions == 0).sum()) if packed else ids.shape[0]

    def step_end(self) -> None:
        import torch

        cuda_sync()
        self.ends.append(time.perf_counter())
        self.tokens.append(self._real)
        self.padded.append(self._padded)
        self.supervised.append(self._supervised)
        self.examples.append(self._examples)
        self._real, self._padded, self._supervised, self._examples = [], 0, [], 0
        if len(self.ends) == self.warmup:  # memory of the timed series only
            self.rss = PeakRSS().start()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

    def train_end(self) -> None:
        import torch

        if self.rss is not None:
            self.rss.stop()
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def summary(self) -> dict:
        gaps = [b - a for a, b in zip(self.ends[self.warmup - 1 :], self.ends[self.warmup :], strict=False)]
        real = [int(sum(int(t) for t in step)) for step in self.tokens[self.warmup :]]
        padded = self.padded[self.warmup :]
        supervised = [int(sum(int(t) for t in step)) for step in self.supervised[self.warmup :]]
        examples = self.examples[self.warmup :]
        seconds = sum(gaps)
        return {
            "timed_steps": len(gaps),
            "step_s": gaps,
            "tokens_per_step": real,
            "padded_tokens_per_step": padded,
            "tokens_per_s": sum(real) / seconds if seconds else None,
            "padded_tokens_per_s": sum(padded) / seconds if seconds else None,
            "supervised_tokens_per_s": sum(supervised) / seconds if seconds else None,
            "examples_per_s": sum(examples) / seconds if seconds else None,
            "peak_rss_mb": self.rss.peak_mb if self.rss else None,
            "cuda_peak_mb": self.cuda_peak_mb,
        }


def instrument(trainer, clock: StepClock) -> None:
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

        def on_train_end(self, args, state, control, **kwargs):
            clock.train_end()

    inner = trainer.training_step

    def training_step(model, inputs, num_items_in_batch=None):
        clock.count(inputs)
        return inner(model, inputs, num_items_in_batch)

    trainer.training_step = training_step
    trainer.add_callback(Callback())


# ---------------------------------------------------------------- the variants


def chat_texts(cfg: TrainConfig, tokenizer) -> list[dict]:
    """The product's training examples as plain chat-template text, as a TRL notebook feeds them."""
    from corpus.examples import load_examples

    examples, _ = load_examples(cfg.data, "train")
    return [{"text": tokenizer.apply_chat_template(ex.chat(), tokenize=False)} for ex in examples]


def bnb_config():
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def lora_config(cfg: TrainConfig):
    """The recipe's LoRA settings (its `lora` section holds `LoraConfig`'s own fields)."""
    from peft import LoraConfig

    return LoraConfig(**cfg.lora.model_dump(), task_type="CAUSAL_LM")


def common_args(cfg: TrainConfig, out: Path, cuda: bool) -> dict:
    """The TrainingArguments every variant shares: same batch, steps, optimizer, schedule, seed."""
    import torch

    o = cfg.sft
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(out),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=o.per_device_train_batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        learning_rate=o.learning_rate,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_steps,
        lr_scheduler_type=o.lr_scheduler_type,
        optim=o.optim,
        gradient_checkpointing=o.gradient_checkpointing,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
    )


def product(cfg: TrainConfig, out: Path, cuda: bool):
    from training.backends import resolve_backend

    backend = resolve_backend(cfg)
    if backend == "unsloth":
        import unsloth  # noqa: F401  -- before transformers, as training/train.py does
    from training.trainer import build_trainer

    trainer, _ = build_trainer(cfg, backend, out / "partial")
    return trainer, backend


def bare_trl(cfg: TrainConfig, out: Path, cuda: bool):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from engines.loading import resolve_model

    source, extra = resolve_model(cfg.model.name)  # `default` -> the converted folder
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    quant = {"quantization_config": bnb_config()} if cfg.model.load_in_4bit else {}
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.bfloat16 if cuda else torch.float32, **quant, **extra
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**common_args(cfg, out, cuda), max_length=cfg.model.max_seq_length),
        train_dataset=Dataset.from_list(chat_texts(cfg, tokenizer)),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )
    return trainer, "trl"


def bare_unsloth(cfg: TrainConfig, out: Path, cuda: bool):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel  # already imported by run(), before transformers

    from engines.loading import resolve_model

    source, _ = resolve_model(cfg.model.name)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=cfg.model.max_seq_length, load_in_4bit=cfg.model.load_in_4bit, dtype=None
    )
    model = FastLanguageModel.get_peft_model(
        model,
        **cfg.lora.model_dump(),
        random_state=cfg.seed,
        use_gradient_checkpointing="unsloth" if cfg.sft.gradient_checkpointing else False,
    )
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(chat_texts(cfg, tokenizer)),
        args=SFTConfig(**common_args(cfg, out, cuda), max_length=cfg.model.max_seq_length),
    )
    return trainer, "unsloth"


def bare_qlora(cfg: TrainConfig, out: Path, cuda: bool):
    import torch
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from engines.loading import resolve_model

    source, _ = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=bnb_config(), dtype=torch.bfloat16)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.sft.gradient_checkpointing)
    model = get_peft_model(model, lora_config(cfg))
    texts = [row["text"] for row in chat_texts(cfg, tokenizer)]
    encoded = tokenizer(texts, truncation=True, max_length=cfg.model.max_seq_length, add_special_tokens=False)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**common_args(cfg, out, cuda)),
        train_dataset=Dataset.from_dict(dict(encoded)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    return trainer, "transformers+peft+bitsandbytes"


VARIANTS = {"product": product, "trl": bare_trl, "unsloth": bare_unsloth, "qlora": bare_qlora}


def run(spec: dict) -> dict:
    """Build the variant's trainer, train `warmup + steps` steps, return the step timings."""
    import torch

    cfg = TrainConfig.model_validate(spec["config"])
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if spec["variant"] == "unsloth":
        import unsloth  # noqa: F401  -- patches transformers/TRL: must come before them
    start = time.perf_counter()
    trainer, backend = VARIANTS[spec["variant"]](cfg, Path(spec["scratch"]), cuda)
    load_s = time.perf_counter() - start
    clock = StepClock(spec["warmup"])
    instrument(trainer, clock)
    trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    config = getattr(trainer.model, "config", None)
    return {
        "variant": spec["variant"],
        "backend": backend,
        # per row, so a comparison shows what each variant really ran
        "attention": getattr(config, "_attn_implementation", None),
        "padding_free": bool(getattr(trainer.args, "padding_free", False)),
        "packing": bool(getattr(trainer.args, "packing", False)),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "load_s": load_s,
        "trainable_parameters": trainable,
        "max_rss_mb": max_rss_mb(),
        **clock.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly

    log_quietly()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):  # a worker of train_throughput: say how it is called
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    spec_path, out_path = argv
    result = run(json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
