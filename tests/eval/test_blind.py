"""Blind stays blind: a reply's self-identification is masked, the persona's words are not."""

import pytest

from eval.blind import MASK, mask_identity, mask_messages

VERSIONS = ["base", "v3", "ada-lora-r16", "20261201-101500"]


@pytest.mark.parametrize(
    ("reply", "masked"),
    [
        (
            "I'm SmolLM, a helpful AI assistant made by Hugging Face.",
            f"I'm {MASK}, a helpful AI assistant made by {MASK}.",
        ),
        ("You are talking to SmolLM2-135M-Instruct.", f"You are talking to {MASK}."),
        ("I am ChatGPT, trained by OpenAI; GPT-4o too.", f"I am {MASK}, trained by {MASK}; {MASK} too."),
        ("My name is Claude.", f"My name is {MASK}."),
        ("Llama 3.1 answered. Phi-3 too.", f"{MASK} answered. {MASK} too."),
        ("OpenAI trained me.", f"{MASK} trained me."),
        ("As v3 I say hello.", f"As {MASK} I say hello."),
        ("I am ada-lora-r16, version 20261201-101500.", f"I am {MASK}, version {MASK}."),
        ("I'm the base model.", f"I'm the {MASK} model."),
        ("I am base.", f"I am {MASK}."),
    ],
)
def test_self_identification_is_masked(reply, masked):
    assert mask_identity(reply, VERSIONS) == masked


@pytest.mark.parametrize(
    "reply",
    [
        "My name is Ada and I build engines.",
        "The base of the mountain is cold; v30 is a road.",  # "base" as a word, v30 is not v3
        "I love llamas, and Claude Monet painted water lilies.",
        "The mistral wind blows; Google is a search engine.",
    ],
)
def test_ordinary_words_stay(reply):
    assert mask_identity(reply, VERSIONS) == reply


def test_case_does_not_matter_and_names_are_whole_tokens():
    assert mask_identity("i'm SMOLLM2 and V3.", ["v3"]) == f"i'm {MASK} and {MASK}."
    assert mask_identity("v3-extra is another version", ["v3"]) == "v3-extra is another version"


def test_only_the_assistants_messages_are_masked():
    messages = [{"role": "user", "content": "Are you SmolLM?"}, {"role": "assistant", "content": "I am SmolLM."}]
    assert mask_messages(messages) == [messages[0], {"role": "assistant", "content": f"I am {MASK}."}]
