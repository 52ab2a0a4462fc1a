"""Blind stays blind: hide a reply's self-identification before a rater sees it.

A reply that says "I'm SmolLM, made by Hugging Face" or names a version ("as v3 I ...") tells
the rater which side is which (FastChat#1210). `mask_identity(reply, names)` replaces, with
`MASK`:

- a model family that is not an ordinary word (SmolLM, GPT, ChatGPT, Qwen, Mixtral, DeepSeek,
  ...), with any size / version suffix (SmolLM2-135M-Instruct, GPT-4o), anywhere;
- a family name that is also an ordinary word or a person's name (Llama, Claude, Gemini,
  Mistral, Phi, Falcon, ...) only with a version suffix ("Llama 3.1", "Phi-3") or where the
  reply names itself ("I am Claude", "my name is Mistral", "called Falcon");
- a maker named as its maker ("made by Hugging Face", "OpenAI trained me");
- each of `names` (the versions' names): anywhere as a whole token when it has a digit or a
  sign (v3, ada-lora-r16, 20261201-101500); when it is a plain word ("base") only where the
  reply names itself or beside model / version / checkpoint / adapter ("the base model").

Everything else is left as it is, so a persona's own name and facts stay readable. The check is
case-insensitive. It cannot catch a paraphrase ("I am the small model from the hub").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[model]"
FAMILIES = ("SmolLM", "GPT", "ChatGPT", "Qwen", "Mixtral", "DeepSeek", "OLMo", "Gemma", "Vicuna", "TinyLlama")
WORD_FAMILIES = ("Llama", "Claude", "Gemini", "Mistral", "Phi", "Falcon", "Alpaca", "Bard", "Zephyr")
MAKERS = ("Hugging Face", "HuggingFace", "OpenAI", "Anthropic", "Meta AI", "Meta", "Google DeepMind", "Google",
          "Mistral AI", "Alibaba Cloud", "Alibaba", "Microsoft", "DeepSeek", "the SmolLM team")  # fmt: skip
# Words after which the next name is the reply's own: "I'm X", "my name is X", "called X".
SELF = (
    r"(?:\bI\s*(?:am|'m|’m)|\bmy name(?:'s|’s| is)|\bcall me|\b(?:called|named|known as)|\bthis is)"
    r"\s+(?:the\s+|an?\s+)?"
)
MADE = r"(?:made|created|trained|built|developed|designed|fine-tuned|released)"
MADE_BY = rf"\b{MADE}\s+by\s+"
NEAR = r"(?:model|version|checkpoint|adapter|variant|release)"
TOKEN = r"(?:\w|\.(?=\w))"  # a word character, or a dot inside a token (3.1, not a full stop)
SUFFIX = rf"(?:[-\s]?v?\d{TOKEN}*)(?:-{TOKEN}+)*"  # 2, -4o, 3.1, -135M-Instruct (a digit first)
EDGE_L, EDGE_R = r"(?<![\w-])", r"(?![\w-])"  # a whole token: "v3." matches v3, "v30" does not


def _alternatives(words: Iterable[str]) -> str:
    # Longest first, so "ChatGPT" wins over "GPT" and "Meta AI" over "Meta".
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))


FAMILY = re.compile(rf"{EDGE_L}(?:{_alternatives(FAMILIES)})\d*(?:{SUFFIX})?{EDGE_R}", re.IGNORECASE)
WORD_FAMILY = rf"(?:{_alternatives(WORD_FAMILIES)})"
WORD_FAMILY_VERSIONED = re.compile(rf"{EDGE_L}{WORD_FAMILY}{SUFFIX}{EDGE_R}", re.IGNORECASE)
WORD_FAMILY_SELF = re.compile(rf"({SELF}){WORD_FAMILY}{EDGE_R}", re.IGNORECASE)
MAKER = re.compile(rf"({MADE_BY})(?:{_alternatives(MAKERS)}){EDGE_R}", re.IGNORECASE)
MAKER_FIRST = re.compile(rf"{EDGE_L}(?:{_alternatives(MAKERS)})(?=\s+{MADE}\s+me\b)", re.IGNORECASE)


def _name_patterns(names: Iterable[str]) -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) per version name: plain words only in context, others anywhere."""
    patterns = []
    for name in {n.strip() for n in names if n and n.strip()}:
        escaped = re.escape(name)
        if re.fullmatch(r"[^\W\d_]+", name):  # a plain word: "base", "ada"
            patterns.append((re.compile(rf"({SELF}){escaped}{EDGE_R}", re.IGNORECASE), rf"\g<1>{MASK}"))
            patterns.append((re.compile(rf"{EDGE_L}{escaped}(?=\s+{NEAR}\b)", re.IGNORECASE), MASK))
            patterns.append((re.compile(rf"(\b{NEAR}\s+){escaped}{EDGE_R}", re.IGNORECASE), rf"\g<1>{MASK}"))
        else:
            patterns.append((re.compile(rf"{EDGE_L}{escaped}{EDGE_R}", re.IGNORECASE), MASK))
    return patterns


def mask_identity(reply: str, names: Iterable[str] = ()) -> str:
    """`reply` with every self-identification of a model or of one of the version `names`
    replaced by `MASK` (the rules in the module docstring)."""
    text = reply
    for pattern, replacement in _name_patterns(names):
        text = pattern.sub(replacement, text)
    text = FAMILY.sub(MASK, text)
    text = WORD_FAMILY_VERSIONED.sub(MASK, text)
    text = WORD_FAMILY_SELF.sub(rf"\g<1>{MASK}", text)
    text = MAKER_FIRST.sub(MASK, text)
    return MAKER.sub(rf"\g<1>{MASK}", text)


def mask_messages(messages: list[dict], names: Iterable[str] = ()) -> list[dict]:
    """Chat messages ({"role", "content"}) with the assistant's text contents masked; the
    user's own words are left as typed."""
    names = list(names)
    return [
        m | {"content": mask_identity(m["content"], names)}
        if m.get("role") == "assistant" and isinstance(m.get("content"), str)
        else m
        for m in messages
    ]
