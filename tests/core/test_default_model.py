"""End-to-end on the real embedded default model (SmolLM2-135M-Instruct), offline."""

import subprocess
import sys

import pytest

from chatbot.session import ChatSession
from core.conversation import build_messages
from core.default_model import default_model_dir, gguf_path
from core.persona import load_persona
from engines.config import GenerationSettings
from tests.conftest import REPO

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(temperature=0, max_new_tokens=24)


def test_default_model_is_a_converted_local_folder(default_engine):
    assert gguf_path().is_file()
    assert (default_model_dir() / "model.safetensors").is_file()
    assert "quantization_config" not in (default_model_dir() / "config.json").read_text()
    assert default_engine.context_window == 8192
    assert default_engine.model.config.model_type == "llama"


def test_persona_reply_streams_in_pieces(default_engine, ada):
    pieces = list(default_engine.stream(build_messages(ada, [], "Hello! What keeps you busy?"), GREEDY))
    assert len(pieces) > 3
    reply = "".join(pieces).strip()
    assert len(reply.split()) >= 3
    assert "<|im_end|>" not in reply and "<|im_start|>" not in reply


def test_max_new_tokens_is_respected(default_engine, ada):
    messages = build_messages(ada, [], "Tell me about your clocks.")
    short = default_engine.generate([messages], GREEDY.model_copy(update={"max_new_tokens": 6}))[0]
    long = default_engine.generate([messages], GREEDY)[0]
    assert short and long.startswith(short) and len(long) > len(short)


def test_reply_changes_with_the_persona(default_engine, ada):
    rusty = load_persona(REPO / "personas" / "rusty.yaml")
    question = "What do you like to do on weekends?"
    replies = default_engine.generate([build_messages(p, [], question) for p in (ada, rusty)], GREEDY)
    assert replies[0] != replies[1]


def test_company_assistant_knows_its_name(default_engine):
    nova = load_persona(REPO / "personas" / "nova.yaml")
    session = ChatSession(default_engine, nova, GREEDY)
    assert "Nova" in session.reply("Who are you?")


def test_terminal_chat_reads_piped_lines():
    lines = "Hi there!\n\nWhat do you keep in your garden?\n/persona personas/nova.yaml\nWho are you?\n"
    args = ["--persona", "personas/ada.yaml", "--generation.temperature", "0", "--generation.max_new_tokens", "16"]
    result = subprocess.run(
        [sys.executable, "-m", "chatbot.chat", *args],
        input=lines,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 4  # the greeting and three answers; the blank line is skipped
    assert replies[0] == "bot> " + load_persona(REPO / "personas" / "ada.yaml").greeting
    assert "[persona switched to Nova]" in result.stdout
    assert all(len(r) > len("bot> ") for r in replies)


def test_terminal_chat_reports_a_bad_persona_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bo\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatbot.chat", "--persona", str(bad)],
        input="",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "field `facts`" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr
