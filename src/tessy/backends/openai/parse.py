"""Reading a `/v1/completions` answer: the new ids, their text, why generation stopped, and what an
error body says.

Owns the response shapes of vLLM, SGLang and llama.cpp. Promises:

- **Exact ids when the server gives them**: `return_token_ids` (vLLM >= 0.10.2, SGLang) or
  logprobs tokens written as `token_id:N` (older vLLM); at most `n` ids, never re-tokenized.
- **Text transport never breaks a character** (`ids_from_text`): when the ids come from tokenizing
  the server's text locally, the result is cut back to a character boundary: a trailing U+FFFD the
  server wrote for a character the length limit split is dropped, and when clipping to `n` ids
  splits a character, the ids of the incomplete character are dropped too, so the text returned
  is exactly the decoded ids, holds no U+FFFD the model did not write, and the next request
  continues from a whole character.
- **A stop is the last id** (`base.Backend` promises it): a server that stopped on a token it
  does not echo gets the stop id appended when there is room; else the finish is "length" and
  the model simply goes on next call.
- **Prompt usage** (`prompt_usage`): the prompt tokens a server counted, and how many it
  computed rather than found in its prefix cache, from vLLM's and SGLang's
  `usage.prompt_tokens_details.cached_tokens` or llama.cpp's `timings.prompt_n`; None where the
  answer does not say.
- **Context-length errors are recognised** in the wording of vLLM, SGLang and llama.cpp, with the
  limit the server states when it states one.
- **Server-sent events** (`event_data`): one line of a streamed answer as its JSON data, "[DONE]",
  or None for what carries no data; a data line that is not JSON is a `ValueError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

REPLACEMENT = "\ufffd"

_CONTEXT_ERROR = re.compile(
    r"context length|context window|maximum context|context_length_exceeded|too many tokens|"
    r"longer than the model|prompt is too long", re.IGNORECASE)
#: llama.cpp (llama-cpp-python) reports a list prompt as a validation error, some versions with 500.
REFUSED_PROMPT = re.compile(r"validation error|valid string", re.IGNORECASE)
_CONTEXT_LIMIT = [
    re.compile(r"maximum context length (?:is|of) (\d+)", re.IGNORECASE),  # vLLM, SGLang
    re.compile(r"context length \((\d+) tokens\)", re.IGNORECASE),  # SGLang
    re.compile(r"context window of (\d+)", re.IGNORECASE),  # llama.cpp (llama-cpp-python)
    re.compile(r"n_ctx[^\d]{0,12}(\d+)", re.IGNORECASE),
]


def is_context_error(status: int, message: str) -> bool:
    return status in (400, 413, 422) and bool(_CONTEXT_ERROR.search(message))


def context_limit(message: str, refused_total: int) -> int:
    """The server's context limit after it refused `refused_total` tokens (prompt + max_tokens):
    the limit it states, never above what it refused."""
    limit = refused_total - 1
    for pattern in _CONTEXT_LIMIT:
        match = pattern.search(message)
        if match:
            return min(limit, int(match.group(1)))
    return limit


def first_choice(content: bytes) -> dict | None:
    """The parsed body of a 200 answer when it has a non-empty `choices` list, else None."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"] \
            and isinstance(data["choices"][0], dict):
        return data
    return None


def ids_from_logprobs(choice: dict) -> list[int] | None:
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t[len("token_id:"):]) for t in tokens]


def ids_from_text(tokenizer: Any, text: str, n: int, finish: str) -> tuple[list[int], str]:
    """Ids for text the server wrote (text transport), at most `n`, ending on a whole character;
    and their decoded text."""
    if finish == "length":
        # A server that decodes with errors="replace" shows the character max_tokens split as
        # U+FFFD; the model did not write it, and the next request regenerates it whole.
        text = text.rstrip(REPLACEMENT)
    ids = tokenizer.encode(text, add_special_tokens=False) if text else []
    if len(ids) <= n:
        return ids, text if ids else ""
    ids = ids[:n]
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    # Clipping may split a character: drop the ids of its incomplete bytes (at most 3 ids for a
    # byte-level tokenizer), unless the model really wrote a U+FFFD there.
    while ids and decoded.endswith(REPLACEMENT) and not text.startswith(decoded):
        ids.pop()
        decoded = tokenizer.decode(ids, skip_special_tokens=False)
    return ids, decoded


def parse_choice(choice: dict, readback: str, tokenizer: Any, n: int,
                 stop: frozenset[int]) -> tuple[list[int], str, str]:
    """(ids, text, finish_reason) from a response's first choice.

    `readback` is how this server returns ids: "return_token_ids", "logprobs" or "text" (tokenize
    its text locally)."""
    text = choice.get("text") or ""
    finish = "stop" if choice.get("finish_reason") == "stop" else "length"
    ids = None
    if readback == "return_token_ids" and isinstance(choice.get("token_ids"), list):
        ids = [int(i) for i in choice["token_ids"]][:n]
    elif readback == "logprobs":
        ids = ids_from_logprobs(choice)
        ids = ids[:n] if ids is not None else None
    if ids is None:  # text transport, or a server that returned no ids
        ids, text = ids_from_text(tokenizer, text, n, finish)
    else:  # exact ids: the engine decodes them itself; this text is for logs and the interface
        text = tokenizer.decode(ids, skip_special_tokens=False)
    if finish == "stop" and (not ids or ids[-1] not in stop):
        # Stopped on a token the server does not echo back: put it last, as `base` promises.
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(matched, int) and matched in stop:
            token = matched
        elif eos in stop:
            token = eos
        else:
            token = min(stop) if stop else None
        if token is not None and len(ids) < n:
            ids.append(token)
            text = tokenizer.decode(ids, skip_special_tokens=False)
        else:  # no room (text re-tokenized longer) or no stop id known: the model goes on next call
            finish = "length"
    return ids, text, finish


def prompt_usage(answer: dict) -> tuple[int | None, int | None]:
    """(prompt tokens the server counted, of those the ones it computed) from an answer's `usage`
    and `timings`; None for what it does not say."""
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    total = usage.get("prompt_tokens")
    total = int(total) if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    timings = answer.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int) and timings["prompt_n"] >= 0:
        processed = timings["prompt_n"]  # llama.cpp: the prompt tokens it evaluated...
        reused = timings.get("cache_n")  # ...and those it found in the slot's cache
        if total is None and isinstance(reused, int) and not isinstance(reused, bool) and reused >= 0:
            total = processed + reused
        return total, processed
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if total is not None and isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        return total, max(0, total - cached)
    return total, None


def error_message(content: bytes) -> str:
    """The human part of an error body (OpenAI `error.message`, FastAPI `detail`, or the text)."""
    text = content.decode("utf-8", errors="replace")
    try:
        data = json.loads(content)
    except ValueError:
        return text
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or data.get("message") or data.get("detail") or data)
        if isinstance(data.get("detail"), (list, dict)):
            return json.dumps(data["detail"])
        return str(error)
    return str(data)


def event_data(line: bytes) -> dict | str | None:
    """One SSE line: its JSON data, "[DONE]", or None (comments, blank lines, other fields)."""
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return "[DONE]"
    try:
        value = json.loads(data)
    except ValueError:
        raise ValueError(f"an event that is not JSON: {snippet(data.decode('utf-8', 'replace'))}") from None
    return value if isinstance(value, dict) else None


def snippet(text: Any, limit: int = 300) -> str:
    """One line of at most `limit` characters, for messages."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"
