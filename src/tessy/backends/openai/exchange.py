"""`Exchange`: one role's requests to its servers, each sent, judged and retried until it has an
answer: the one request path of `OpenAIHTTPBackend`, streamed or not (`send(..., stream=)`).

Owns the bound on requests in flight and the one retry loop. Promises:

- **At most `max_in_flight` requests** of the role at once across replicas; a request waiting
  out a backoff or waiting for a server holds no slot; a stream holds its slot until
  `Events.aclose`.
- **Faults** (timeouts, connection errors, 429, 5xx, malformed answers; for a stream, any of
  these before its first event with a choice) are counted by kind in `stats.faults` and retried
  by `retry.RetryPolicy`; a connection fault that marks its replica down charges no retry
  (`replicas.ReplicaSet.acquire` moves the sequence or waits for a server). Past the bounds, and
  on any other refusal, a `ServerError` naming role and server.
- A context-length refusal is answered with its message (a str), for the backend to learn the
  server's limit.
- A streamed answer is an `Events`: its events (parsed JSON) from the first one on. A fault after
  that first event ends the events early; `Events.fault` says which (counted, never retried: the
  tokens so far are the model's).
- Connections are `client.HTTPClient`'s: reused only after an answer read to its end.
- Error text is redacted (`tessy.secrets.redact_text`) before it reaches a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Callable

from tessy.backends.openai import parse
from tessy.backends.openai.client import HTTPClient, HTTPFault, Response, Timeout
from tessy.backends.openai.replicas import Replica, ReplicaSet
from tessy.backends.openai.retry import RetryPolicy, ServerError, fault_kind, is_retryable_status, retry_after
from tessy.backends.openai.stats import HTTPStats
from tessy.secrets import redact_text

log = logging.getLogger(__name__)

#: What one attempt comes to: (fault, the server's Retry-After, whether the connection failed,
#: the outcome: an answer, an `Events`, a context-length message, or None after a fault).
Attempt = tuple[str, "float | None", bool, "dict | str | Events | None"]


class Exchange:
    """Sends one role's requests over its `ReplicaSet` with its `HTTPClient` (see the module docstring)."""

    def __init__(self, role: str, replicas: ReplicaSet, client: HTTPClient, stats: HTTPStats,
                 retry: RetryPolicy, max_in_flight: int, secrets: list[str]):
        self.role, self.replicas, self.client, self.stats, self.retry = role, replicas, client, stats, retry
        self.max_in_flight = max(1, int(max_in_flight))
        self.secrets = secrets
        self.sleep: Callable[[float], Any] = asyncio.sleep  # backoff waits (tests record them)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: Any = None

    async def send(self, seq_id: str, body: dict[str, Any], *, stream: bool = False) -> "dict | str | Events":
        """The parsed 200 answer (`stream` false) or its open `Events` (`stream` true); or the
        message of a context-length refusal (a str). The one retry loop."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            replica = await self.replicas.acquire(seq_id)  # may wait while every replica is down
            slots = self._semaphore()
            await slots.acquire()
            outcome = None
            try:
                fault, server_says, connection_fault, outcome = await self._attempt(replica, payload, stream, slots)
            finally:
                if not isinstance(outcome, Events):  # an open stream keeps its slot until closed
                    slots.release()
            if outcome is not None:
                return outcome
            self.count_fault(fault)
            if connection_fault and await self.replicas.connection_failed(replica):
                # The server is down: no retry is charged; acquire() moves the sequence to a live
                # replica or waits for one.
                log.debug("%s %s: %s (replica down)", self.role, replica.shown, fault)
                continue
            attempt += 1
            bound = self.retry.charge(seq_id, attempt)
            if bound is not None:
                raise ServerError(f"{self.role} server {replica.shown}: gave up after {bound}; last error: {fault}")
            self.stats.retries += 1
            delay = self.retry.delay(attempt, server_says)
            log.debug("%s %s: %s; retry %d in %.2fs", self.role, replica.shown, fault, attempt, delay)
            await self.sleep(delay)

    async def _attempt(self, replica: Replica, payload: bytes, stream: bool, slots: asyncio.Semaphore) -> Attempt:
        """One exchange with `replica`, judged."""
        self.stats.requests += 1
        events = None
        try:
            resp = await self.client.request("POST", replica.url + "/v1/completions", payload, stream=stream)
            if stream and resp.status_code == 200:
                events = Events(self, replica, resp, slots)
                try:
                    await events.first()
                except BaseException:
                    events.abandon()
                    raise
            elif stream:
                try:
                    await resp.read()
                finally:
                    resp.close()
        except Timeout as exc:
            return f"timeout ({exc})", None, True, None
        except HTTPFault as exc:  # refused, reset, dropped
            return f"connection error ({self.redact(exc)})", None, True, None
        except ValueError as exc:  # a streamed event that is not JSON
            return f"malformed answer: {self.redact(exc)}", None, False, None
        self.replicas.answered(replica)
        return ("", None, False, events) if events is not None else self._judge(replica, resp)

    def _judge(self, replica: Replica, resp: Response) -> Attempt:
        """A whole answer that is not an open stream, judged."""
        status = resp.status_code
        if status == 200:
            data = parse.first_choice(resp.content)
            if data is not None:
                return "", None, False, data
            return f"malformed answer: {self.redact(parse.snippet(resp.text))}", None, False, None
        if is_retryable_status(status):
            return (f"HTTP {status}: {self.redact(parse.snippet(resp.text))}",
                    retry_after(resp.headers.get("retry-after")), False, None)
        message = parse.error_message(resp.content)
        if parse.is_context_error(status, message):
            self.stats.context_errors += 1
            return "", None, False, message
        raise ServerError(f"{self.role} server {replica.shown}: HTTP {status} (not retried): "
                          f"{self.redact(parse.snippet(message))}")

    def count_fault(self, fault: str) -> None:
        self.stats.faults[fault_kind(fault)] = self.stats.faults.get(fault_kind(fault), 0) + 1

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.max_in_flight), loop
        return self._slots

    def redact(self, text: Any) -> str:
        return redact_text(str(text), self.secrets)


class Events:
    """An open streamed answer whose head said 200 (made by `Exchange.send`).

    `async for event in events` yields its events (dicts parsed from the `data:` lines) until
    `[DONE]` or the body's end, or until a fault: then `fault` names it (already counted).
    `finished` is true once the answer was read to its end. `where` names the server for
    messages. `aclose()` must end every stream: the connection is kept only if the body was read
    to its end, and the in-flight slot is given back."""

    def __init__(self, exchange: Exchange, replica: Replica, response: Response, slots: asyncio.Semaphore):
        self.where = f"{exchange.role} server {replica.shown}"
        self.fault = ""
        self.finished = False
        self._exchange, self._response, self._slots = exchange, response, slots
        self._lines = response.lines()
        self._read: list[dict] = []
        self._open = True

    async def first(self) -> None:
        """Read up to the first event that carries a choice (or the end); faults raise (the
        exchange retries them)."""
        while not self.finished:
            event = await self._next()
            if event is not None:
                self._read.append(event)
                choices = event.get("choices")
                if choices and isinstance(choices[0], dict):
                    return

    async def _next(self) -> dict | None:
        """The next event, None for lines without data, and `finished` at the end."""
        try:
            line = await self._lines.__anext__()
        except StopAsyncIteration:
            self.finished = True
            return None
        event = parse.event_data(line)
        if event == "[DONE]":
            async for _ in self._lines:  # to the body's end: the connection may serve the next request
                pass
            self.finished = True
            return None
        return event

    async def __aiter__(self) -> AsyncIterator[dict]:
        while self._read:
            yield self._read.pop(0)
        while not self.finished and not self.fault:
            try:
                event = await self._next()
            except (HTTPFault, ValueError) as exc:  # the connection failed mid-stream
                self.fault = f"{type(exc).__name__}: {self._exchange.redact(exc)}"
                self._exchange.count_fault(self.fault)
                return
            if event is not None:
                yield event

    def abandon(self) -> None:
        """Close the connection (unless the body was read whole); the slot is the caller's."""
        self._open = False
        self._response.close()

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            await self._lines.aclose()
        finally:
            self._response.close()
            self._slots.release()
