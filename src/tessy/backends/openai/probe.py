"""Readiness: is each server up, what model does it serve, and which transport does it speak.

Owns the checks made before any sample is sent, and the light probe that tells whether a server
that went down answers again. Promises:

- `check_ready` asks every replica's `GET /v1/models`. An unreachable server, an error status, a
  body that is not a model list, or a server that serves another model than the one configured
  is a `ServerNotReady` naming the role, the (redacted) URL and what was found. With no
  `served_model_name` configured, the one model a server serves (or the configured `model`, when
  listed) is used. Either way the id the server reports is returned as `served_model` (and its
  card's `root`, vLLM's path of the weights), so a run can record what really answered.
- In `auto` prompt mode one 1-token completion per replica decides the transport: `token_ids`
  when the server takes a list of ids and returns ids (`return_token_ids`, or logprobs as
  `token_id:N`), `token_ids+text_out` when it takes ids but returns only text, `text` when it
  refuses ids (llama.cpp). All replicas must agree. Transient faults of the probe are retried
  like any request.
- **Which server** (`Readiness.server`): "llama.cpp" when `GET /props` answers with
  `total_slots` (llama.cpp's own `llama-server`; `slots` is the fewest any replica has) or the
  model card is `owned_by` "llamacpp"; "llama-cpp-python" when the card is `owned_by` "me" or the
  server refused a token-id prompt with a validation error; else the card's `owned_by` ("vllm",
  "sglang", ...). `/props` is not asked of a server whose card says vLLM or SGLang.
- `probe_stream`: whether every replica answers a `stream: true` completion with server-sent
  events that carry text (and the token ids, in the readback the transport needs).
- `ping` (async) is the circuit breaker's probe: true when `GET /v1/models` answers 200.

Every request goes through `client.HTTPClient` (the backend's one client); the checks at start are
synchronous (`client.run_sync`). No message holds a credential: URLs are shown redacted and error
text goes through `tessy.secrets.redact_text`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

from tessy.backends.openai.client import HTTPClient, HTTPFault, run_sync
from tessy.backends.openai.parse import REFUSED_PROMPT, event_data, first_choice, ids_from_logprobs, snippet
from tessy.backends.openai.retry import MAX_BACKOFF_S, is_retryable_status
from tessy.secrets import redact_text

log = logging.getLogger(__name__)


class ServerNotReady(RuntimeError):
    """A configured server is unreachable, unhealthy, or serves another model."""


@dataclass
class Readiness:
    served_model: str  # the model id the server reports in /v1/models
    served_root: str  # that card's `root` (vLLM: the weights' path or hub name), "" when absent
    max_model_len: int | None  # the card's context length, when the server says
    transport: str  # "token_ids", "token_ids+text_out" or "text"; "" when not probed
    readback: str  # how ids come back: "return_token_ids", "logprobs" or "text"
    server: str = ""  # "llama.cpp", "llama-cpp-python", "vllm", "sglang", ... ("" when unknown)
    slots: int = 0  # llama.cpp: the server's slots (the fewest of any replica); 0 when unknown

    @property
    def llama_cpp(self) -> bool:
        return self.server in LLAMA_CPP


#: Server kinds that take llama.cpp's cache fields (`cache_prompt`, `id_slot`).
LLAMA_CPP = ("llama.cpp", "llama-cpp-python")


def check_ready(
    replicas: Sequence[Any],
    *,
    role: str,
    headers: dict[str, str],
    timeout_s: float,
    model_name: str,
    served_model_name: str,
    probe_transport: bool,
    probe_ids: list[int],
    max_retries: int,
    backoff_s: float,
    secrets: Sequence[str] = (),
) -> Readiness:
    """Check every replica (objects with `.url`, the real URL, and `.shown`, the redacted one)."""
    args = (replicas, role, headers, timeout_s, model_name, served_model_name, probe_transport, probe_ids,
            max_retries, backoff_s, secrets)
    return run_sync(lambda: _check_ready(*args))


async def _check_ready(replicas: Sequence[Any], role: str, headers: dict[str, str], timeout_s: float,
                       model_name: str, served_model_name: str, probe_transport: bool, probe_ids: list[int],
                       max_retries: int, backoff_s: float, secrets: Sequence[str]) -> Readiness:
    wanted, root, max_len, modes = served_model_name, "", None, set()
    kinds, slots = set(), []
    async with HTTPClient(headers, min(timeout_s, 30.0)) as client:
        for replica in replicas:
            where = f"{role} server {replica.shown}"
            try:
                resp = await client.request("GET", replica.url + "/v1/models")
            except HTTPFault as exc:
                raise ServerNotReady(f"{where} is unreachable ({type(exc).__name__}: "
                                     f"{redact_text(exc, secrets)}); start it, or fix --{role}.url") from None
            if resp.status_code != 200:
                raise ServerNotReady(f"{where}: GET /v1/models answered HTTP {resp.status_code}: "
                                     f"{redact_text(snippet(resp.text), secrets)}")
            try:
                cards = [c for c in resp.json().get("data", []) if isinstance(c, dict)]
            except (ValueError, AttributeError):
                raise ServerNotReady(f"{where}: /v1/models did not answer JSON: "
                                     f"{redact_text(snippet(resp.text), secrets)}") from None
            served = [str(c.get("id")) for c in cards]
            if not wanted:
                if len(served) == 1 or model_name in served:
                    wanted = served[0] if len(served) == 1 else model_name
                else:
                    raise ServerNotReady(f"{where} serves {served or 'no model'}; set "
                                         f"--{role}.served-model-name to the one to use")
            if wanted not in served:
                raise ServerNotReady(f"{where} serves {served or 'no model'}, not {wanted!r} as "
                                     f"configured for the {role}")
            card = cards[served.index(wanted)]
            card_root = str(card.get("root") or "")
            if root and card_root and card_root != root:
                log.warning("%s: replicas serve %r from different weights (%r, %r)", role, wanted, root, card_root)
            root = root or card_root
            if isinstance(card.get("max_model_len"), int):
                max_len = card["max_model_len"] if max_len is None else min(max_len, card["max_model_len"])
            mode = None
            if probe_transport:
                mode = await _probe(client, replica, role, wanted, probe_ids, max_retries, backoff_s, secrets)
                modes.add(mode[:2])
            kind, n_slots = await _server_kind(client, replica, str(card.get("owned_by") or ""),
                                         mode is not None and mode[2])
            kinds.add(kind)
            if n_slots:
                slots.append(n_slots)
    transport, readback = "", "return_token_ids"
    if modes:
        if len(modes) > 1:
            raise ServerNotReady(f"{role}: replicas differ in what they accept ({sorted(modes)}); "
                                 f"set --{role}.prompt-mode")
        transport, readback = modes.pop()
    server = kinds.pop() if len(kinds) == 1 else ""
    return Readiness(wanted, root, max_len, transport, readback, server, min(slots) if slots else 0)


async def _server_kind(client: HTTPClient, replica: Any, owned_by: str,
                       refused_validation: bool) -> tuple[str, int]:
    """(the server's kind, its slots when llama.cpp says) from the card and `GET /props`."""
    if owned_by in ("vllm", "sglang"):
        return owned_by, 0
    try:
        resp = await client.request("GET", replica.url + "/props")
        props = resp.json() if resp.status_code == 200 else None
    except Exception:  # noqa: BLE001 - any failure: not llama-server
        props = None
    if isinstance(props, dict) and isinstance(props.get("total_slots"), int):
        return "llama.cpp", max(0, props["total_slots"])
    if owned_by == "llamacpp":
        return "llama.cpp", 0
    if owned_by == "me" or refused_validation:
        return "llama-cpp-python", 0
    return owned_by, 0


async def _probe(client: HTTPClient, replica: Any, role: str, model: str, ids: list[int], max_retries: int,
                 backoff_s: float, secrets: Sequence[str]) -> tuple[str, str, bool]:
    """One 1-token completion: does the server take token ids, and return them? (transport,
    readback, whether ids were refused with llama-cpp-python's validation error)"""
    body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "return_token_ids": True}
    status, choice = await _probe_post(client, replica, role, body, max_retries, backoff_s, secrets)
    if status in (400, 422) or (status >= 500 and REFUSED_PROMPT.search(str(choice))):
        return "text", "text", bool(REFUSED_PROMPT.search(str(choice)))  # ids refused (llama.cpp)
    if status != 200:
        raise ServerNotReady(f"{role} server {replica.shown}: probe completion answered HTTP {status}: {choice}")
    if isinstance(choice.get("token_ids"), list):
        return "token_ids", "return_token_ids", False
    body.update(logprobs=0, return_tokens_as_token_ids=True)
    status, choice = await _probe_post(client, replica, role, body, max_retries, backoff_s, secrets)
    if status == 200 and ids_from_logprobs(choice) is not None:
        return "token_ids", "logprobs", False
    log.warning("%s server %s takes token-id prompts but returns no token ids: its text is "
                "tokenized locally", role, replica.shown)
    return "token_ids+text_out", "text", False


async def _probe_post(client: HTTPClient, replica: Any, role: str, body: dict, max_retries: int,
                      backoff_s: float, secrets: Sequence[str]) -> tuple[int, Any]:
    """POST a probe, retrying transient faults like any request: (status, first choice or error text)."""
    for attempt in range(max_retries + 1):
        try:
            resp = await client.request("POST", replica.url + "/v1/completions", json.dumps(body).encode())
        except HTTPFault as exc:
            status, detail = 0, f"{type(exc).__name__}: {redact_text(exc, secrets)}"
        else:
            status, detail = resp.status_code, redact_text(snippet(resp.text), secrets)
            if status == 200:
                data = first_choice(resp.content)
                if data is not None:
                    return 200, data["choices"][0]
                status = 0  # malformed: retried
            elif not is_retryable_status(status) or REFUSED_PROMPT.search(detail):
                return status, detail  # llama-cpp-python reports its validation error as a 500
        if attempt < max_retries:
            await asyncio.sleep(random.uniform(0.0, min(MAX_BACKOFF_S, backoff_s * 2 ** attempt)))
    raise ServerNotReady(f"{role} server {replica.shown}: probe completion failed after {max_retries} "
                         f"retries: {detail}")


def probe_stream(replicas: Sequence[Any], body: dict, *, headers: dict[str, str], timeout_s: float,
                 needs_ids: str) -> bool:
    """Whether each replica streams `body` as events with choices (and ids: `needs_ids` is
    "return_token_ids" or "logprobs"; "" for text)."""
    return run_sync(lambda: _probe_stream(replicas, body, headers, timeout_s, needs_ids))


async def _probe_stream(replicas: Sequence[Any], body: dict, headers: dict[str, str], timeout_s: float,
                        needs_ids: str) -> bool:
    payload = json.dumps(body).encode()
    async with HTTPClient(headers, timeout_s) as client:
        for replica in replicas:
            events = 0
            try:
                resp = await client.request("POST", replica.url + "/v1/completions", payload, stream=True)
                try:
                    if resp.status_code != 200 or "event-stream" not in resp.headers.get("content-type", ""):
                        return False
                    async for line in resp.lines():
                        event = event_data(line)
                        choices = event.get("choices") if isinstance(event, dict) else None
                        if not choices or not isinstance(choices[0], dict):
                            continue
                        choice = choices[0]
                        if needs_ids and (choice.get("text") or choice.get("finish_reason") is None):
                            if needs_ids == "return_token_ids" and not isinstance(choice.get("token_ids"), list):
                                return False
                            if needs_ids == "logprobs" and ids_from_logprobs(choice) is None:
                                return False
                        events += 1
                finally:
                    resp.close()
            except (HTTPFault, ValueError):
                return False
            if not events:
                return False
    return True


async def ping(client: HTTPClient, url: str, timeout_s: float) -> bool:
    """Whether the server at `url` answers `GET /v1/models` with 200 within `timeout_s`."""
    try:
        return (await client.request("GET", url + "/v1/models", timeout_s=timeout_s)).status_code == 200
    except HTTPFault:
        return False
