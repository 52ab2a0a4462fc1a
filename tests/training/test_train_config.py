"""TrainConfig sections carry the upstream configs' own field names and are passed through whole."""

import dataclasses

import pytest

from core.cli import validate_config
from core.errors import ConfigError
from tests.conftest import REPO
from training.backends import lora_config
from training.config import LoraPart, SftPart, TrainConfig
from training.trainer import sft_args

# A value unlike both our default and TRL's for every field of the `sft` section.
SFT_VALUES = {
    "learning_rate": 3e-5,
    "weight_decay": 0.1,
    "warmup_steps": 7,
    "lr_scheduler_type": "linear",
    "optim": "sgd",
    "per_device_train_batch_size": 3,
    "per_device_eval_batch_size": 5,
    "gradient_accumulation_steps": 2,
    "num_train_epochs": 2.0,
    "gradient_checkpointing": True,
    "padding_free": True,
    # Undeclared SFTConfig fields pass too (one of each kind).
    "max_grad_norm": 0.5,
    "train_sampling_strategy": "group_by_length",
    "report_to": ["tensorboard"],  # checked only when the trainer starts
    "packing": True,
    "packing_strategy": "wrapped",
    "neftune_noise_alpha": 5.0,
    "eval_steps": 3,
    "logging_steps": 2,
    "save_steps": 6,
    "save_total_limit": 4,
}


def test_every_section_field_is_an_upstream_field():
    from peft import LoraConfig
    from trl import SFTConfig

    assert set(SftPart.model_fields) - {f.name for f in dataclasses.fields(SFTConfig)} == set()
    assert set(LoraPart.model_fields) - {f.name for f in dataclasses.fields(LoraConfig)} == set()
    assert set(SftPart.model_fields) < set(SFT_VALUES)  # the next test sets every field


# Declared although TRL's default is the same or close: the error messages name their flags.
SAME_AS_TRL = {"gradient_accumulation_steps", "per_device_eval_batch_size", "padding_free"}


def test_only_the_products_own_defaults_are_declared(tmp_path):
    from trl import SFTConfig

    trl = SFTConfig(output_dir=str(tmp_path), use_cpu=True)
    ours = SftPart()
    for name in set(SftPart.model_fields) - SAME_AS_TRL:
        theirs = getattr(trl, name)
        assert (theirs.value if hasattr(theirs, "value") else theirs) != getattr(ours, name), name


def test_an_unknown_sft_field_is_named_before_anything_loads(tmp_path):
    cfg = TrainConfig.model_validate({"device": "cpu", "sft": {"learnig_rate": 1e-4}})
    with pytest.raises(ConfigError, match=r"sft.learnig_rate is not a trl.SFTConfig field"):
        sft_args(cfg, tmp_path, has_validation=False)
    cfg = TrainConfig.model_validate({"device": "cpu", "sft": {"max_steps": 3}})
    with pytest.raises(ConfigError, match=r"(?s)sft.max_steps is set by the product.*max_steps \(top level\)"):
        sft_args(cfg, tmp_path, has_validation=False)


def test_values_in_the_sft_section_arrive_on_sft_config(tmp_path):
    cfg = TrainConfig.model_validate({"sft": SFT_VALUES, "max_steps": 9, "seed": 7, "device": "cpu"})
    args = sft_args(cfg, tmp_path, has_validation=True)
    for name, value in SFT_VALUES.items():
        arrived = getattr(args, name)
        assert (arrived.value if hasattr(arrived, "value") else arrived) == value, name  # enums: their value
    assert (args.max_steps, args.seed, args.output_dir) == (9, 7, str(tmp_path / "checkpoints"))
    assert args.max_length == 512  # packing needs one: its bin size


def test_a_field_added_to_the_section_reaches_trl_with_no_other_edit(tmp_path):
    class Wider(SftPart):
        neftune_noise_alpha: float | None = None

    cfg = TrainConfig(device="cpu").model_copy(update={"sft": Wider(neftune_noise_alpha=5.0)})
    assert sft_args(cfg, tmp_path, has_validation=False).neftune_noise_alpha == 5.0


def test_lora_section_builds_the_peft_config():
    cfg = TrainConfig.model_validate({"lora": {"r": 8, "lora_alpha": 4, "lora_dropout": 0.0, "bias": "lora_only"}})
    peft = lora_config(cfg)
    assert (peft.r, peft.lora_alpha, peft.lora_dropout, peft.bias) == (8, 4, 0.0, "lora_only")
    assert set(peft.target_modules) == set(cfg.lora.target_modules) and peft.task_type == "CAUSAL_LM"


def test_eval_batch_defaults_to_the_train_batch():
    assert TrainConfig.model_validate({"sft": {"per_device_train_batch_size": 6}}).sft.per_device_eval_batch_size == 6


def test_padding_free_is_left_to_unsloth_unless_set(tmp_path):
    unset = sft_args(TrainConfig(device="cpu"), tmp_path, has_validation=False)
    assert unset.padding_free is None and unset.max_length == 512  # Unsloth turns it on only when None
    on = sft_args(TrainConfig.model_validate({"device": "cpu", "sft": {"padding_free": True}}), tmp_path, False)
    assert on.padding_free is True and on.max_length is None  # records are fitted already


def test_without_a_varlen_kernel_packing_becomes_padded_batches_grouped_by_length(
    tiny_model_dir, spc_csv, tmp_path, caplog
):
    from training.trainer import build_trainer

    cfg = TrainConfig.model_validate(
        {"device": "cpu", "model": {"name": str(tiny_model_dir), "max_seq_length": 128},
         "data": {"path": str(spc_csv), "limit": 2}, "sft": {"packing": True, "padding_free": True}}
    )  # fmt: skip
    with caplog.at_level("INFO", logger="training"):
        trainer, _ = build_trainer(cfg, "trl", tmp_path / "partial")
    assert "attention: sdpa, padded batches grouped by length" in caplog.text
    assert not trainer.args.packing and not trainer.args.padding_free
    assert trainer.args.train_sampling_strategy == "group_by_length"
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert batch["input_ids"].shape[0] == 2 and "attention_mask" in batch  # padded rows, no dense flat mask


def test_with_a_varlen_kernel_packed_batches_are_kept(tiny_model_dir, spc_csv, tmp_path, monkeypatch, caplog):
    from training import batching
    from training.trainer import build_trainer

    # Stands in for a varlen kernel on a GPU (CPU tests): the layout is what is checked, not the kernel
    # (a real flash_attention_2 would also be asked of from_pretrained, which fails without flash-attn).
    monkeypatch.setattr(batching, "varlen_kernel", lambda backend, cuda: "xformers")
    cfg = TrainConfig.model_validate(
        {"device": "cpu", "model": {"name": str(tiny_model_dir), "max_seq_length": 512},
         "data": {"path": str(spc_csv), "limit": 2, "unit": "conversation"},
         "sft": {"packing": True, "packing_strategy": "bfd"}}
    )  # fmt: skip
    with caplog.at_level("INFO", logger="training"):
        trainer, _ = build_trainer(cfg, "trl", tmp_path / "partial")
    assert "attention: xformers, packed" in caplog.text
    row = trainer.train_dataset[0]
    assert len(row["seq_lengths"]) >= 1 and sum(row["seq_lengths"]) == len(row["input_ids"]) <= 512
    batch = trainer.data_collator([row])
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(row["seq_lengths"])  # position ids restart at every packed sequence


def test_early_stopping_needs_a_checkpoint_at_every_evaluation(tmp_path):
    bad = {"validation": {"early_stopping_patience": 2}, "sft": {"eval_steps": 100}}  # save_steps 50
    with pytest.raises(ConfigError, match=r"sft.save_steps \(50\) is not a multiple of sft.eval_steps \(100\)"):
        validate_config(TrainConfig, bad)
    good = validate_config(TrainConfig, {**bad, "sft": {"eval_steps": 100, "save_steps": 200}, "device": "cpu"})
    assert sft_args(good, tmp_path, has_validation=True).load_best_model_at_end  # transformers accepts it


@pytest.mark.parametrize("recipe", sorted((REPO / "training" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_takes_early_stopping(recipe, tmp_path):
    import yaml

    values = yaml.safe_load(recipe.read_text())
    values["validation"] = {**values.get("validation", {}), "early_stopping_patience": 3}
    values["device"] = "cpu"
    sft_args(validate_config(TrainConfig, values, source=str(recipe)), tmp_path, has_validation=True)


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_any_trl_field_passes_from_a_preference_section_and_a_typo_is_named(method, tmp_path):
    from training.preference import preference_args

    cfg = TrainConfig.model_validate({"device": "cpu", "method": method, method: {"adam_beta2": 0.95}})
    assert preference_args(cfg, tmp_path).adam_beta2 == 0.95  # a TrainingArguments field nobody declared
    typo = TrainConfig.model_validate({"device": "cpu", "method": method, method: {"bta": 0.2}})
    with pytest.raises(ConfigError, match=rf"{method}.bta is not a trl.{method.upper()}Config field"):
        preference_args(typo, tmp_path)
    derived = TrainConfig.model_validate({"device": "cpu", "method": method, method: {"output_dir": "x"}})
    with pytest.raises(ConfigError, match="set by the product"):
        preference_args(derived, tmp_path)
