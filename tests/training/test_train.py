"""Training mechanics on the tiny Llama: label mask, run folder, versions, resume, bad input."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.versions import list_versions
from corpus.examples import Example
from engines.config import EngineConfig, GenerationSettings
from engines.engine import TransformersEngine
from engines.factory import load_engine
from tests.conftest import REPO
from training import trainer
from training.config import TrainConfig
from training.records import to_records
from training.train import main
from training.trainer import build_trainer

RECIPE = str(REPO / "training" / "recipes" / "tiny-test.yaml")


def versions_on_disk(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) if runs.exists() else []


def train_args(tiny_model_dir, runs: Path, *extra: str) -> list[str]:
    return ["--config", RECIPE, "--model.name", str(tiny_model_dir), "--output.dir", str(runs), *extra]


def test_loss_falls_on_the_persona_reply_only(tiny_model_dir, spc_csv, tmp_path):
    cfg = TrainConfig.model_validate(
        {"model": {"name": str(tiny_model_dir), "max_seq_length": 512}, "data": {"path": str(spc_csv), "limit": 2}}
    )
    trainer, _ = build_trainer(cfg, "trl", tmp_path / "partial")
    tokenizer = trainer.processing_class
    for i in (0, 5):  # an opening turn and one with history
        record = trainer.train_dataset[i]
        batch = trainer.data_collator([record])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        trained = tokenizer.decode(ids[labels != -100])
        masked = tokenizer.decode(ids[labels == -100])
        assert trained == record["completion"][0]["content"] + "<|im_end|>\n"
        assert "Your persona:" in masked and masked.endswith("<|im_start|>assistant\n")
        for message in record["prompt"][1:]:  # the other speaker's and earlier own turns: context only
            assert message["content"] in masked
    assert any(len(trainer.train_dataset[i]["prompt"]) > 2 for i in range(len(trainer.train_dataset)))


PERSONA = {"role": "system", "content": "Your persona: I keep three hives of bees. I build clocks in my shed."}
HISTORY = [  # the persona spoke first: the history starts on an assistant turn
    {"role": "assistant", "content": "Hello! I was just winding the long-case clock in the hall."},
    {"role": "user", "content": "Hi! How many clocks do you have by now, and which one is your favourite?"},
    {"role": "assistant", "content": "Eleven, and the water clock I built first is still the one I love most."},
    {"role": "user", "content": "A water clock! How does it keep time when the weather turns cold?"},
    {"role": "assistant", "content": "Badly, to be honest: in winter it loses ten minutes a day."},
    {"role": "user", "content": "Do the bees mind the ticking?"},
]
LONG = Example("c1", "User 2", 6, [PERSONA, *HISTORY], "Not at all, they hum along.")


def record_tokens(tokenizer, record: dict) -> int:
    """What TRL trains on: prompt + completion through the chat template."""
    chat = record["prompt"] + record["completion"]
    return len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"])


def test_long_record_loses_whole_oldest_turns_as_chat_would(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    full = record_tokens(tokenizer, {"prompt": LONG.messages, "completion": [LONG.chat()[-1]]})
    max_seq_length = full - 30
    [record] = to_records([LONG], tokenizer, max_seq_length)
    prompt = record["prompt"]
    assert prompt[0] == PERSONA and prompt[1]["role"] == "user" and 2 < len(prompt) < len(LONG.messages)
    assert prompt[1:] == HISTORY[len(HISTORY) - len(prompt) + 1 :]  # whole turns, the newest kept
    assert record_tokens(tokenizer, record) <= max_seq_length
    # The engine keeps the same turns when the reply's tokens are what it holds back.
    reply = full - tiny_engine.count_tokens(LONG.messages)
    engine = TransformersEngine(tiny_engine.model, tokenizer, "tiny", max_context_tokens=max_seq_length)
    assert engine.fit_messages(LONG.messages, GenerationSettings(max_new_tokens=reply)) == prompt


# ChatML with a preamble in the system message, as Llama 3.1/3.2 templates add one.
PREAMBLE_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'system' %}Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    "{% endif %}{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_counts_come_from_the_chat_template(tiny_engine):
    tokenizer = copy.deepcopy(tiny_engine.tokenizer)
    tokenizer.chat_template = PREAMBLE_TEMPLATE
    assert "Today Date" in tokenizer.apply_chat_template([PERSONA], tokenize=False)
    full = record_tokens(tokenizer, {"prompt": LONG.messages, "completion": [LONG.chat()[-1]]})
    [whole] = to_records([LONG], tokenizer, full)
    [trimmed] = to_records([LONG], tokenizer, full - 1)  # one token short: a turn must go
    assert whole["prompt"] == LONG.messages and len(trimmed["prompt"]) < len(LONG.messages)
    assert record_tokens(tokenizer, trimmed) <= full - 1


def test_example_that_cannot_fit_is_left_out(tiny_engine, caplog):
    tokenizer = tiny_engine.tokenizer
    shortest = {"prompt": [PERSONA, HISTORY[-1]], "completion": [LONG.chat()[-1]]}
    with caplog.at_level("INFO", logger="training"):
        records = to_records([LONG, LONG], tokenizer, record_tokens(tokenizer, shortest) - 1)
    assert records == []
    assert "2 did not fit even so and are left out" in caplog.text


def test_run_writes_a_loadable_version(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    assert main(train_args(tiny_model_dir, runs, "--output.version", "v1")) == 0
    run_dir = runs / "v1"
    for name in ["version.json", "config.yaml", "data.json", "metrics.json", "log.csv", "log.json", "loss.png"]:
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints").exists() and not list(runs.glob(".partial-*"))
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: training moved it
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["base_eval_loss"] is not None
    data = json.loads((run_dir / "data.json").read_text())
    assert len(data["sha256"]) == 64 and data["train_conversation_ids"]
    assert [v.name for v in list_versions(runs)] == ["base", "v1"]
    engine = load_engine(EngineConfig(model="v1", runs_dir=str(runs)))
    assert engine.name == "v1"
    [reply] = engine.generate(
        [[{"role": "user", "content": "Hi"}]], GenerationSettings(temperature=0, max_new_tokens=4)
    )
    assert isinstance(reply, str) and reply  # the version loads and answers


def test_interrupted_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    real_finish = trainer.finish

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "finish", crash)
    assert main(train_args(tiny_model_dir, runs, "--output.version", "v2")) == 130
    assert not (runs / "v2").exists()  # an unfinished run is no version
    assert (runs / ".partial-v2" / "checkpoints" / "checkpoint-4").is_dir()
    assert [v.name for v in list_versions(runs)] == ["base"]
    monkeypatch.setattr(trainer, "finish", real_finish)
    assert (
        main(train_args(tiny_model_dir, runs, "--output.version", "v2", "--max_steps", "6", "--output.resume", "true"))
        == 0
    )
    history = json.loads((runs / "v2" / "log.json").read_text())
    assert max(e["step"] for e in history) == 6
    assert json.loads((runs / "v2" / "metrics.json").read_text())["steps"] == 6


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora.r", "0"], "lora.r must be a positive rank"),
        (["--model.load_in_4bit", "true"], "no CUDA GPU"),
        (["--backend", "unsloth"], "needs a CUDA GPU"),
        (["--output.resume", "true", "--output.version", "nothing"], "no unfinished run nothing"),
        (["--data.path", "/no/such/file.csv"], "does not exist"),
        (["--validation.early_stopping_patience", "2", "--sft.eval_steps", "3"], "not a multiple of sft.eval_steps"),
    ],
)
def test_bad_recipes_fail_with_a_clear_message(tiny_model_dir, tmp_path, capsys, flags, message):
    # --device cpu: the "no CUDA GPU" cases must hold on a GPU machine too.
    assert main(train_args(tiny_model_dir, tmp_path / "runs", "--device", "cpu", *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err
    assert versions_on_disk(tmp_path / "runs") == []


def test_unknown_key_in_a_recipe_is_named(tiny_model_dir, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lora:\n  alpha: 8\n")  # PEFT's name is lora_alpha
    assert main(["--config", str(recipe), "--model.name", str(tiny_model_dir), "--output.dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "`lora.alpha`: Extra inputs are not permitted" in err and "--help" in err


def test_dataset_with_no_usable_rows_is_refused(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        'user 1 personas,user 2 personas,Best Generated Conversation\n"I fish.","I run.","no speakers here"\n'
    )
    assert main(train_args(tiny_model_dir, tmp_path / "runs", "--data.path", str(bad))) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "fix:" in err
    assert versions_on_disk(tmp_path / "runs") == []


def test_existing_version_is_not_overwritten(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "runs" / "v1").mkdir(parents=True)
    assert main(train_args(tiny_model_dir, tmp_path / "runs", "--output.version", "v1")) == 2
    assert "already exists" in capsys.readouterr().err


def test_out_of_memory_gives_advice_and_leaves_no_version(tiny_model_dir, tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("trl.SFTTrainer.train", oom)
    assert main(train_args(tiny_model_dir, tmp_path / "runs", "--output.version", "v3")) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "--sft.per_device_train_batch_size" in err and "load_in_4bit" in err
    assert list((tmp_path / "runs").iterdir()) == []  # not even a partial folder


def test_full_disk_is_refused_before_training(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    assert main(train_args(tiny_model_dir, tmp_path / "runs", "--output.version", "v4")) == 2
    err = capsys.readouterr().err
    assert "MB free" in err and "--output.dir" in err
    assert list((tmp_path / "runs").iterdir()) == []  # no partial folder either


def test_early_stopping_ends_the_run_and_keeps_the_best(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    flags = ["--output.version", "v5", "--max_steps", "40", "--sft.eval_steps", "1",
             "--validation.early_stopping_patience", "1", "--sft.learning_rate", "0.5",
             "--sft.save_steps", "1"]  # fmt: skip
    assert main(train_args(tiny_model_dir, runs, *flags)) == 0
    metrics = json.loads((runs / "v5" / "metrics.json").read_text())
    assert metrics["steps"] < 40  # a huge learning rate makes validation loss rise: stopped early
