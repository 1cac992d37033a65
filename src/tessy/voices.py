"""Voices: a few-shot preamble that one model of the pair sees before every prompt.

A small instruct model does not think out loud by itself. A *voice* gives it the habit: a
system message and a few example turns, put in front of each prompt for that model only
(`ModelConfig.voice`). Records keep the plain prompt, so the data teaches the student to write
in the voice without the preamble. That is how a 0.5B instruct model becomes a student with the
paper's kind of style ("Okay, let's see… Wait, … So, …").

Owns the built-in voices and `load_voice(spec)`. Promises:
- a spec is "" (no preamble), a built-in name (`VOICES`), or a JSON file holding a list of
  `{"role", "content"}` messages (system first if any, then user/assistant pairs);
- a bad file is a `ValueError` naming the file and the message index at fault;
- `with_voice(preamble, messages)` puts the preamble first; the preamble's system message
  replaces the prompt's own, so a model never sees two.

The example answers are written in the `<think>` layout (`<think>\\n…\\n</think>\\n\\n answer`),
the one the qwen3 chat format prompts for and parses.
"""

from __future__ import annotations

import json
from pathlib import Path

Message = dict[str, str]

_COUNT_VOWELS = (
    "Complete this Python function. Explain your reasoning briefly, then give the code.\n\n"
    "```python\ndef count_vowels(s: str) -> int:\n"
    '    """Return how many vowels (a, e, i, o, u, in either case) are in s."""\n```'
)
_COUNT_VOWELS_CODE = (
    "```python\ndef count_vowels(s: str) -> int:\n"
    '    return sum(1 for ch in s if ch.lower() in "aeiou")\n```'
)
_PENCILS = "Pencils are sold in packs of 12. Mia needs 50 pencils. How many packs must she buy?"

_THINK_ALOUD = [
    {"role": "system", "content": "You are a careful assistant. Before you answer, you think out loud inside "
                                  "<think> and </think>, the way a person talks through a problem."},
    {"role": "user", "content": _COUNT_VOWELS},
    {"role": "assistant", "content": (
        "<think>\nOkay, let's see. The function has to count the vowels in a string, upper and lower case "
        "both.\n\nSo I need to look at each character and check whether it is a vowel. Hmm, the easiest way "
        "is to lower-case the character first and then test it against \"aeiou\".\n\nWait, what about an "
        "empty string? Then the loop runs zero times and the count is 0, so that case needs nothing "
        "special.\n\nAlright, sum over a generator does it in one line.\n</think>\n\n"
        "Lower-case each character and count the ones in \"aeiou\".\n\n" + _COUNT_VOWELS_CODE)},
    {"role": "user", "content": _PENCILS},
    {"role": "assistant", "content": (
        "<think>\nOkay, so Mia needs 50 pencils and they only come in packs of 12.\n\nLet me divide: 50 / 12 "
        "is 4 with 2 left over. Four packs give 48 pencils, which is not enough.\n\nWait, she still needs "
        "the last 2 pencils, so that means one more pack. Five packs, 60 pencils.\n\nSo the answer is 5."
        "\n</think>\n\nFour packs hold only 48 pencils, so she must buy 5 packs.\n\nThe answer is 5.")},
]

_STEPS = [
    {"role": "system", "content": "You are an expert problem solver. Reason in a few short steps inside <think> and "
                                  "</think>, in plain words and without code; then give the final answer, and "
                                  "any code, after </think>."},
    {"role": "user", "content": _COUNT_VOWELS},
    {"role": "assistant", "content": (
        "<think>\nCount characters c of s with c.lower() in \"aeiou\"; this covers both cases. An empty string "
        "gives 0 without a special case. A generator inside sum() computes it in one pass.\n</think>\n\n"
        "Lower-case each character and count the ones in \"aeiou\".\n\n" + _COUNT_VOWELS_CODE)},
    {"role": "user", "content": _PENCILS},
    {"role": "assistant", "content": (
        "<think>\n50 = 4 * 12 + 2. Four packs hold 48 < 50 pencils, so a fifth pack is needed: "
        "ceil(50 / 12) = 5.\n</think>\n\nFour packs hold only 48 pencils, so she must buy 5 packs.\n\n"
        "The answer is 5.")},
]

#: Built-in voices by name.
VOICES: dict[str, list[Message]] = {"think-aloud": _THINK_ALOUD, "think-steps": _STEPS}


def load_voice(spec: str) -> list[Message]:
    """The preamble named or stored by `spec` ("" = none)."""
    if not spec:
        return []
    if spec in VOICES:
        return [dict(message) for message in VOICES[spec]]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"voice {spec!r} is neither a built-in voice ({', '.join(VOICES)}) nor a file")
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"voice file {path}: not valid JSON ({exc})") from None
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"voice file {path}: expected a non-empty JSON list of messages")
    for index, message in enumerate(messages):
        if (not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant")
                or not isinstance(message.get("content"), str)):
            raise ValueError(f"voice file {path}: message {index} needs a role (system, user or assistant) "
                             "and a string content")
        if message["role"] == "system" and index:
            raise ValueError(f"voice file {path}: message {index}: only the first message may be a system message")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def with_voice(preamble: list[Message], messages: list[Message]) -> list[Message]:
    """`messages` with the preamble in front; the preamble's system message replaces the prompt's."""
    if not preamble:
        return messages
    if preamble[0]["role"] == "system" and messages and messages[0].get("role") == "system":
        messages = messages[1:]
    return [*preamble, *messages]
