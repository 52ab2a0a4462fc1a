"""eval.evaluate's swap probe asks what the Chat tab asks after a persona switch."""

from core.persona import persona_from_facts, render_system_prompt
from eval.evaluate import switched_to


def test_the_swap_probe_switches_as_the_chat_tab_does():
    bea = persona_from_facts(["I race pigeons.", "I live by the sea."])
    dialogue = [
        {"role": "user", "content": "Hi, what do you build?"},
        {"role": "assistant", "content": "Clocks, mostly. And I keep bees."},
        {"role": "user", "content": "What do you do at weekends?"},
    ]
    # The new persona starts afresh: its system prompt and the user turn after the switch, none
    # of the old persona's replies (they kept it talking like the old one).
    assert switched_to(bea, dialogue) == [
        {"role": "system", "content": render_system_prompt(bea)},
        {"role": "user", "content": "What do you do at weekends?"},
    ]
    assert switched_to(bea, []) == [{"role": "system", "content": render_system_prompt(bea)}]  # an opening line
