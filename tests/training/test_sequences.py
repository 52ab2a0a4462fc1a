"""Whole-conversation sequences (data.unit conversation) on the tiny Llama, through TRL's own
dataset preparation: the loss mask is the speaker's replies, the loss equals the per-turn one."""

from collections import Counter

import pytest
import torch

from training.config import TrainConfig
from training.sequences import conversation_chats, conversation_records, tokenize_chat
from training.trainer import build_trainer

IGNORE = -100


def prepared(tiny_model_dir, spc_csv, tmp_path, unit: str, **sft):
    cfg = TrainConfig.model_validate(
        {"device": "cpu", "model": {"name": str(tiny_model_dir), "max_seq_length": 512},
         "data": {"path": str(spc_csv), "limit": 2, "unit": unit}, "sft": sft}
    )  # fmt: skip
    trainer, data_info = build_trainer(cfg, "trl", tmp_path / unit)
    return trainer, data_info


def spans(labels: list[int]) -> list[tuple[int, ...]]:
    """The runs of supervised tokens in one row of labels."""
    runs, current = [], []
    for token in [*labels, IGNORE]:
        if token != IGNORE:
            current.append(token)
        elif current:
            runs.append(tuple(current))
            current = []
    return runs


def summed_loss(model, rows) -> tuple[float, int]:
    """(sum of token losses over the supervised tokens, their count), one row at a time (no padding)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = model(input_ids=ids).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, labels[0, 1:], reduction="sum").item()
            count += int((labels[0, 1:] != IGNORE).sum())
    return total, count


def test_the_mask_is_exactly_each_speakers_replies(tiny_model_dir, spc_csv, tmp_path):
    turns, _ = prepared(tiny_model_dir, spc_csv, tmp_path, "turn")
    whole, info = prepared(tiny_model_dir, spc_csv, tmp_path, "conversation")
    assert info["unit"] == "conversation" and info["train_sequences"] == len(whole.train_dataset) == 4  # 2 x 2
    tokenizer = whole.processing_class
    assert max(len(row["input_ids"]) for row in whole.train_dataset) <= 512  # none was split
    for row in whole.train_dataset:
        text = tokenizer.decode(row["input_ids"])
        # each supervised run is one reply and its end-of-turn: never the persona or the other speaker
        for run in spans(row["labels"]):
            reply = tokenizer.decode(run)
            assert reply.endswith("<|im_end|>\n") and "<|im_start|>" not in reply
            assert f"<|im_start|>assistant\n{reply}" in text
    # The same supervised token runs as the per-turn examples' completions, one for one.
    per_turn = Counter(run for row in turns.train_dataset for run in spans(row["labels"]))
    per_conversation = Counter(run for row in whole.train_dataset for run in spans(row["labels"]))
    assert per_turn == per_conversation and sum(per_turn.values()) == len(turns.train_dataset)
    # and the whole dataset is several times fewer tokens
    tokens = {name: sum(len(r["input_ids"]) for r in t.train_dataset) for name, t in (("turn", turns), ("conv", whole))}
    assert tokens["conv"] * 3 < tokens["turn"]


def test_mean_loss_over_the_same_replies_equals_the_per_turn_loss(tiny_model_dir, spc_csv, tmp_path):
    turns, _ = prepared(tiny_model_dir, spc_csv, tmp_path, "turn")
    whole, _ = prepared(tiny_model_dir, spc_csv, tmp_path, "conversation")
    model = whole.model.eval()  # the same (PEFT-wrapped, LoRA B = 0) model for both
    turn_sum, turn_count = summed_loss(model, turns.train_dataset)
    conv_sum, conv_count = summed_loss(model, whole.train_dataset)
    assert conv_count == turn_count > 100
    assert conv_sum / conv_count == pytest.approx(turn_sum / turn_count, rel=1e-4)


def test_long_conversations_split_at_turn_boundaries(tiny_engine, spc_csv):
    from corpus.examples import DataConfig, load_examples

    examples, _ = load_examples(DataConfig(path=spc_csv, limit=3), "train")
    tokenizer = tiny_engine.tokenizer
    chats = conversation_chats(examples)
    whole = conversation_records(chats, tokenizer, 10_000)
    split = conversation_records(chats, tokenizer, 160)
    assert len(split) > len(whole) == len(chats) == 6
    assert all(len(r["input_ids"]) <= 160 for r in split)
    persona_starts = {tuple(r["input_ids"][:20]) for r in whole}
    for record in split:  # every piece starts with its speaker's persona (the system message)
        assert tuple(record["input_ids"][:20]) in persona_starts
        text = tokenizer.decode(record["input_ids"])
        assert text.count("<|im_start|>system") == 1 and text.rstrip().endswith("<|im_end|>")  # whole turns
    # Every reply that fits alone is still supervised, once.
    masked = sum(sum(r["completion_mask"]) for r in split)
    assert masked <= sum(sum(r["completion_mask"]) for r in whole)
    assert masked > 0.8 * sum(sum(r["completion_mask"]) for r in whole)


def test_a_chat_whose_template_is_not_prefix_stable_is_refused(tiny_engine):
    class Odd:
        def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=False):
            return "|".join(m["content"] for m in reversed(chat))

        def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False):
            if isinstance(texts, str):
                return {"input_ids": [ord(c) for c in texts], "offset_mapping": [(i, i + 1) for i in range(len(texts))]}
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ValueError, match="prefix"):
        tokenize_chat(Odd(), chat)


def test_packed_loss_equals_unpacked(tiny_model_dir, tiny_engine, spc_csv):
    """TRL's padding-free collator (what packing feeds the model): position ids restart at each
    sequence, so no sequence attends to another and the loss is the unpacked one."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from corpus.examples import DataConfig, load_examples

    examples, _ = load_examples(DataConfig(path=spc_csv, limit=2), "train")
    records = conversation_records(conversation_chats(examples), tiny_engine.tokenizer, 200)[:3]
    rows = [
        {
            "input_ids": r["input_ids"],
            "labels": [t if m else IGNORE for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)],
        }
        for r in records
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert packed["input_ids"].shape[0] == 1 and (packed["position_ids"][0] == 0).sum() == 3
    with torch.no_grad():
        # use_cache=False as in training: transformers reads packed sequences from position ids only without a cache
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[
            0, :-1
        ]
    labels = packed["labels"][0, 1:]
    packed_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
    unpacked_sum, count = summed_loss(model, rows)
    assert int((labels != IGNORE).sum()) == count
    assert packed_sum / count == pytest.approx(unpacked_sum / count, rel=1e-4)
    # and without the restart (one long sequence) the later sequences would see the earlier ones
    with torch.no_grad():
        leaked = model(input_ids=packed["input_ids"], use_cache=False).logits[0, :-1]
    leaked_sum = torch.nn.functional.cross_entropy(leaked, labels, reduction="sum").item()
    assert leaked_sum / count != pytest.approx(unpacked_sum / count, rel=1e-3)


def test_a_run_on_whole_conversations_writes_a_version(tiny_model_dir, tmp_path):
    import json

    from tests.conftest import REPO
    from training.train import main

    runs = tmp_path / "runs"
    flags = ["--config", str(REPO / "training" / "recipes" / "tiny-test.yaml"), "--model.name", str(tiny_model_dir)]
    flags += ["--data.unit", "conversation", "--model.max_seq_length", "256", "--output.dir", str(runs)]
    assert main([*flags, "--output.version", "whole"]) == 0
    data = json.loads((runs / "whole" / "data.json").read_text())
    assert data["unit"] == "conversation" and data["train_sequences"] > 0
    metrics = json.loads((runs / "whole" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["base_eval_loss"] is not None  # validation: per turn
