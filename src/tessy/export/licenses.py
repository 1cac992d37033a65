"""The ``license`` and ``language`` a dataset card states, and what it must ask the user for.

The data is the output of the teacher and the student, so their licenses bound what the data may
be used for. `license_of(model)` knows the models this project names (the demo models of
`tessy.models`, the paper's pairs in DESIGN.md) by their published license, as a Hugging Face
license id; `card_license(models)` is that id when every generating model's is known and the same,
the list of them when they differ, and `PLACEHOLDER_LICENSE` when any is unknown (a fine-tuned
checkpoint, a model not in the table): a value the Hub refuses, so the card cannot be published
before someone fills it in. A license the user names (``--license``) wins.

`card_language(texts)` is ``["en"]`` when the prompts and responses are clearly English (most
words ASCII, and English function words common among them), else `PLACEHOLDER_LANGUAGE`; a
language the user names (``--language``) wins. Both placeholders are reported by the export so
that the command says what to fill in.
"""

from __future__ import annotations

import re
from typing import Iterable

PLACEHOLDER_LICENSE = "FILL-IN-the-license (tessy does not know the license of every model that wrote the data)"
PLACEHOLDER_LANGUAGE = "FILL-IN-the-language-codes (tessy could not tell the language of the data)"

#: (pattern on the model name's last part, lower case; Hugging Face license id; whose terms).
KNOWN_LICENSES = (
    (r"gpt-oss", "apache-2.0", "OpenAI gpt-oss (Apache 2.0)"),
    (r"^qwen3-", "apache-2.0", "Qwen3 (Apache 2.0)"),
    (r"^qwen2\.5-coder-(0\.5|1\.5|7|14|32)b", "apache-2.0", "Qwen2.5-Coder (Apache 2.0)"),
    (r"deepseek-r1", "mit", "DeepSeek-R1 and its distilled models (MIT)"),
    (r"smollm2", "apache-2.0", "SmolLM2 (Apache 2.0)"),
    (r"gemma-?3", "gemma", "the Gemma Terms of Use"),
)

_ENGLISH = frozenset("the a an and or of to in is are be it that this we so let for with as on not if then "
                     "what which but by at from was can have has".split())


def license_of(model: str | None) -> str | None:
    """The Hugging Face license id of a model this project knows, else None."""
    if not model:
        return None
    name = str(model).rstrip("/").split("/")[-1].lower()
    if name.endswith(".gguf"):
        name = name[: -len(".gguf")]
    for pattern, license_id, _ in KNOWN_LICENSES:
        if re.search(pattern, name):
            return license_id
    return None


def card_license(models: Iterable[str | None], given: str | None = None) -> tuple[str | list[str], list[str]]:
    """(the card's license, the models whose license is unknown)."""
    if given:
        return given, []
    names = sorted({str(m) for m in models if m})
    unknown = [m for m in names if license_of(m) is None]
    if unknown or not names:
        return PLACEHOLDER_LICENSE, unknown or ["(the records name no model)"]
    ids = sorted({license_of(m) for m in names})  # type: ignore[type-var]
    return (ids[0] if len(ids) == 1 else ids), []


def card_language(texts: Iterable[str],
                  given: tuple[str, ...] | list[str] | None = None) -> tuple[list[str] | str, bool]:
    """(the card's language list or placeholder, whether it is a placeholder)."""
    if given:
        return list(given), False
    words = ascii_words = english = 0
    for text in texts:
        for word in re.findall(r"[^\W\d_]+", text):
            words += 1
            if word.isascii():
                ascii_words += 1
                english += word.lower() in _ENGLISH
        if words > 200_000:  # enough to tell
            break
    if words >= 20 and ascii_words >= 0.9 * words and english >= 0.05 * words:
        return ["en"], False
    return PLACEHOLDER_LANGUAGE, True
