"""Engine mechanics on a tiny Llama (real tokenizer and chat template, random weights)."""

import json
import os
import sys
import threading
from pathlib import Path

import pytest
import torch

from core.errors import MessageError, ModelLoadError
from engines.config import EngineConfig, GenerationSettings
from engines.engine import TransformersEngine
from engines.factory import load_engine
from engines.loading import resolve_model
from engines.priority import CHAT_NICE

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.0)


def chat(*turns: str) -> list[dict]:
    """System + alternating user/assistant turns, ending on the user."""
    roles = ["user", "assistant"]
    return [{"role": "system", "content": "You are Ada."}] + [
        {"role": roles[i % 2], "content": t} for i, t in enumerate(turns)
    ]


def test_stream_yields_pieces_that_join_to_the_batched_reply(tiny_engine):
    messages = chat("Hello there, how are you?")
    pieces = list(tiny_engine.stream(messages, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == tiny_engine.generate([messages], GREEDY)[0]


def test_a_negative_prompt_steers_each_token_away_from_it(tiny_engine):
    """Classifier-free guidance (after a persona switch): each greedy token is the argmax of
    scale * (log p | prompt - log p | negative) + log p | negative, computed here by hand."""
    prompt = chat("Who are you?")
    negative = [{"role": "system", "content": "You are Sam, a farmer."}, *prompt[1:]]
    settings = GREEDY.model_copy(update={"max_new_tokens": 6})  # guidance_scale: the default, 3

    def logprobs(messages, ids):
        start = tiny_engine._encode([tiny_engine.render(messages)])["input_ids"][0]
        with torch.inference_mode():
            logits = tiny_engine.model(torch.cat([start, torch.tensor(ids, dtype=torch.long)])[None]).logits
        return torch.log_softmax(logits[0, -1].float(), -1)

    ids = []
    while len(ids) < 6 and (not ids or ids[-1] != tiny_engine.tokenizer.eos_token_id):
        pos, neg = logprobs(prompt, ids), logprobs(negative, ids)
        ids.append(int((settings.guidance_scale * (pos - neg) + neg).argmax()))
    expected = tiny_engine.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert tiny_engine.generate([prompt], settings, [negative])[0] == expected
    assert "".join(tiny_engine.stream(prompt, settings, negative)).strip() == expected
    plain = tiny_engine.generate([prompt], settings)[0]
    assert plain != expected
    assert "".join(tiny_engine.stream(prompt, settings)).strip() == plain
    off = settings.model_copy(update={"guidance_scale": 1.0})  # 1 = off: the negative is ignored
    assert tiny_engine.generate([prompt], off, [negative])[0] == plain


def test_max_new_tokens_cuts_the_reply(tiny_engine):
    messages = chat("Tell me about clocks.")
    short = tiny_engine.generate([messages], GREEDY.model_copy(update={"max_new_tokens": 3}))[0]
    long = tiny_engine.generate([messages], GREEDY.model_copy(update={"max_new_tokens": 20}))[0]
    assert short and len(short) < len(long)
    assert long.startswith(short)


def test_batched_generation_matches_one_at_a_time(tiny_engine):
    prompts = [chat("Hi"), chat("A much longer opening message about bees and clocks and the weather"), chat("Yo")]
    batched = tiny_engine.generate(prompts, GREEDY, batch_size=3)
    single = [tiny_engine.generate([p], GREEDY)[0] for p in prompts]
    assert batched == single
    assert len(set(batched)) > 1  # different prompts, different replies: the order is kept


def test_seed_makes_sampling_reproducible(tiny_engine):
    messages = chat("Say something.")
    sampled = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12, seed=7)
    first = "".join(tiny_engine.stream(messages, sampled))
    again = "".join(tiny_engine.stream(messages, sampled))
    other = "".join(tiny_engine.stream(messages, sampled.model_copy(update={"seed": 8})))
    assert first == again
    assert first != other


def test_history_is_trimmed_from_the_oldest_turn(tiny_model_dir):
    engine = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=120))
    turns = [f"turn number {i} " + "words " * 10 for i in range(12)] + ["the newest question"]
    fitted = engine.fit_messages(chat(*turns), GREEDY)
    assert fitted[0]["role"] == "system"
    assert fitted[-1]["content"] == "the newest question"
    assert fitted[1]["role"] == "user"  # the dialogue restarts on a user turn
    assert 2 < len(fitted) < len(turns) + 1
    assert engine.count_tokens(fitted) <= 120 - GREEDY.max_new_tokens
    assert "turn number 0" not in json.dumps(fitted)
    assert len(engine.generate([chat(*turns)], GREEDY)[0]) > 0


def test_message_longer_than_the_context_window_is_refused(tiny_model_dir):
    engine = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=64))
    with pytest.raises(MessageError, match="too long.*tokens") as info:
        engine.fit_messages(chat("blah " * 200), GREEDY)
    assert "shorten the message" in info.value.fix


def test_huge_max_new_tokens_is_capped_to_the_window(tiny_model_dir):
    engine = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=64))
    messages = chat("Hello")
    reply = engine.generate([messages], GREEDY.model_copy(update={"max_new_tokens": 5000}))[0]
    prompt = engine.count_tokens(messages)
    assert 0 < len(engine.tokenizer(reply)["input_ids"]) <= 64 - prompt + 2  # +2: re-tokenisation slack


def test_abandoned_stream_stops_generation(tiny_engine):
    before = threading.active_count()
    stream = tiny_engine.stream(chat("Hi"), GREEDY.model_copy(update={"max_new_tokens": 400}))
    next(stream)
    stream.close()  # what Gradio does when the user presses stop
    assert threading.active_count() == before


def test_missing_model_path_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model("./runs/nothing/here")


def test_folder_that_is_not_a_model_is_explained(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_model(str(tmp_path))


def test_hub_id_stays_a_hub_id_and_fails_clearly_offline():
    assert resolve_model("unsloth/llama-3-8b-Instruct-bnb-4bit") == ("unsloth/llama-3-8b-Instruct-bnb-4bit", {})
    with pytest.raises(ModelLoadError, match="could not load model") as info:
        load_engine(EngineConfig(model="persona-studio-test/no-such-model"))
    assert "HF_HUB_OFFLINE" in info.value.fix


def _save_adapter(model_dir, out, hidden_size=None):
    """A LoRA adapter with non-zero B (so it changes outputs) on the tiny model or on a
    differently shaped copy of it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    if hidden_size:
        config = AutoConfig.from_pretrained(model_dir)
        config.hidden_size, config.intermediate_size = hidden_size, hidden_size * 2
        base = LlamaForCausalLM(config)
    else:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(out)
    return out


def test_adapter_on_top_changes_the_reply(tiny_model_dir, tiny_engine, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter")
    tuned = load_engine(EngineConfig(model=str(tiny_model_dir), adapter=str(adapter)))
    base_logits = tiny_engine.model(torch.tensor([[1, 2, 3]])).logits
    tuned_logits = tuned.model(torch.tensor([[1, 2, 3]])).logits
    assert not torch.allclose(base_logits, tuned_logits)


def test_adapter_for_another_base_is_refused(tiny_model_dir, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "wrong", hidden_size=48)
    with pytest.raises(ModelLoadError, match="does not fit") as info:
        load_engine(EngineConfig(model=str(tiny_model_dir), adapter=str(adapter)))
    assert "--model" in info.value.fix


def test_adapter_folder_passed_as_model_is_explained(tiny_model_dir, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="is a LoRA adapter"):
        resolve_model(str(adapter))


def test_tokenizer_without_chat_template_is_refused(tiny_engine):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ModelLoadError, match="no chat template"):
        TransformersEngine(tiny_engine.model, NoTemplate(), "bare-base-model")


def test_token_streamer_hands_out_each_token_and_holds_back_split_characters(tiny_engine):
    from engines.engine import TokenStreamer

    tokenizer = tiny_engine.tokenizer
    text = "Hello 🐝 bees!\nCafé déjà vu, ünïcode 時計."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    streamer = TokenStreamer(tokenizer, skip_prompt=True)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    pieces = []
    for i in ids:
        streamer.put(torch.tensor([i]))
        pieces.append(streamer.text_queue.get_nowait() if not streamer.text_queue.empty() else None)
    streamer.end()
    assert pieces[0] == "Hello"  # the first token is out before the second is generated
    emitted = [p for p in pieces if p is not None]
    assert len(emitted) < len(ids)  # the bee emoji's bytes span tokens: held back, never shown as U+FFFD
    assert not any("\ufffd" in p for p in emitted)
    assert "".join(emitted) == text


def test_a_reply_cut_inside_a_character_ends_without_a_replacement_character(tiny_engine):
    from engines.engine import TokenStreamer

    tokenizer = tiny_engine.tokenizer
    ids = tokenizer("Hello 🐝", add_special_tokens=False)["input_ids"]
    cut = next(n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith("\ufffd"))  # inside the bee
    streamer = TokenStreamer(tokenizer, skip_prompt=False)
    for i in ids[:cut]:  # generation stops here, as at max_new_tokens
        streamer.put(torch.tensor([i]))
    streamer.end()
    reply = "".join(iter(streamer.text_queue.get, streamer.stop_signal))
    assert reply == "Hello "


def _nice_values() -> list[int]:
    """The nice value of each thread of this process (Linux: field 19 of /proc/<tid>/stat)."""
    tasks = Path("/proc/self/task")
    return [int((tasks / tid / "stat").read_text().rsplit(")", 1)[1].split()[16]) for tid in os.listdir(tasks)]


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_a_streamed_reply_is_generated_at_the_chat_priority(tiny_engine):
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # 0, or what `nice` ran pytest at
    stream = tiny_engine.stream(chat("Hi"), GREEDY.model_copy(update={"max_new_tokens": 400}))
    next(stream)  # the generate thread is running now
    during = _nice_values()
    stream.close()
    assert min(ours + CHAT_NICE, 19) in during  # the generate thread (and its torch workers) yield to requests
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours  # the caller's thread is untouched
