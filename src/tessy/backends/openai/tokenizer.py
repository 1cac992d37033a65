"""The tokenizer the HTTP backend needs locally (it sends token ids and decodes the ids it gets
back), or one clear error that says how to get it onto a machine without hub access."""

from __future__ import annotations

from typing import Any


class TokenizerNotFound(RuntimeError):
    """The model's tokenizer is not available locally."""


def load_http_tokenizer(spec: str, role: str = "model") -> Any:
    """The tokenizer for `spec` (demo alias, folder or cached hub name), or a clear error."""
    from transformers import AutoTokenizer

    from tessy.models import ModelNotFound, resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(spec))
    except (OSError, ValueError, ModelNotFound) as exc:
        raise TokenizerNotFound(
            f"{role}: the HTTP backend needs the tokenizer of {spec!r} locally and could not load it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Give "
            f"--{role}.tokenizer a folder holding tokenizer.json / tokenizer_config.json (for example "
            f"`huggingface-cli download {spec} --include 'tokenizer*' --local-dir DIR` on a machine "
            "with hub access, then copy DIR here), or a hub name already in the local Hugging Face cache."
        ) from None
