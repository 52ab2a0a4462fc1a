"""The terminal chat's scope guard: a deflection is printed as the reply and marked on stderr;
`--scope_guard false` lets the question reach the model (tiny model, in-process)."""

import io

from chatbot import chat
from chatbot.session import ChatSession
from core.cli import parse_config
from core.persona import load_persona
from engines.config import GenerationSettings
from tests.conftest import REPO

GRACE = REPO / "personas" / "lovelace_guide.yaml"
GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


def test_off_topic_line_gets_the_deflection_marked_on_stderr(tiny_engine, capsys):
    grace = load_persona(GRACE)
    chat.run(ChatSession(tiny_engine, grace, GREEDY), io.StringIO("What's a good recipe for pancakes?\n"))
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"bot> {grace.scope.deflection}"
    assert "[off-topic for Grace" in err and "--scope_guard false" in err

    cfg = parse_config(chat.ChatConfig, ["--persona", str(GRACE), "--scope_guard", "false"])
    unguarded = ChatSession(tiny_engine, grace, GREEDY, cfg.scope_guard)
    chat.run(unguarded, io.StringIO("What's a good recipe for pancakes?\n"))
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] != f"bot> {grace.scope.deflection}" and "off-topic" not in err
