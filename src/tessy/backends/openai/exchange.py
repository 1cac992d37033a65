"""`Exchange`: one role's requests to its servers, each sent, judged and retried until it has an
answer (the send loop of `OpenAIHTTPBackend`; the streamed reading itself is `stream`).

Owns the bound on requests in flight and the loop around one request. Promises:

- **At most `max_in_flight` requests** of the role at once across replicas; a request waiting
  out a backoff or waiting for a server holds no slot (a stream holds its slot until released).
- **Faults** (timeouts, connection errors, 429, 5xx, malformed answers) are counted by kind in
  `stats.faults` and retried by `retry.RetryPolicy`; a connection fault that marks its replica
  down charges no retry (`replicas.ReplicaSet.acquire` moves the sequence or waits for a
  server). Past the bounds, and on any other refusal, a `ServerError` naming role and server.
- A context-length refusal is answered with its message (a str), for the backend to learn the
  server's limit.
- **Connections** are reused only after a complete exchange; a cancelled or failed request
  closes its connection.
- Error text is redacted (`tessy.secrets.redact_text`) before it reaches a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from tessy.backends import http1
from tessy.backends.openai import parse
from tessy.backends.openai.replicas import Replica, ReplicaSet
from tessy.backends.openai.retry import RetryPolicy, ServerError, fault_kind, is_retryable_status, retry_after
from tessy.backends.openai.stats import HTTPStats
from tessy.secrets import redact_text

log = logging.getLogger(__name__)


class Exchange:
    """Sends one role's requests over its `ReplicaSet` (see the module docstring)."""

    def __init__(self, role: str, replicas: ReplicaSet, stats: HTTPStats, retry: RetryPolicy,
                 max_in_flight: int, secrets: list[str]):
        self.role, self.replicas, self.stats, self.retry = role, replicas, stats, retry
        self.max_in_flight = max(1, int(max_in_flight))
        self.secrets = secrets
        self.sleep: Callable[[float], Any] = asyncio.sleep  # backoff waits (tests record them)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: Any = None

    # ---- one request, with retries -------------------------------------------------------------

    async def post(self, seq_id: str, body: dict[str, Any]) -> dict | str:
        """The parsed 200 answer, or the message of a context-length refusal (a str)."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            replica = await self.replicas.acquire(seq_id)  # may wait while every replica is down
            async with self._semaphore():
                fault, server_says, connection_fault, outcome = await self._send(replica, payload)
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

    async def _send(self, replica: Replica, payload: bytes) -> tuple[str, float | None, bool, dict | str | None]:
        """One exchange: (fault, Retry-After, whether the connection failed, outcome or None)."""
        import httpx

        self.stats.requests += 1
        connection = self.replicas.take(replica)
        complete = False  # the response was read whole: the connection may serve the next request
        try:
            if isinstance(connection, http1.Connection):
                resp = await connection.post("/v1/completions", payload)
            else:
                resp = await connection.post("/v1/completions", content=payload)
            complete = True
        except (httpx.TimeoutException, http1.Timeout) as exc:
            return f"timeout ({type(exc).__name__})", None, True, None
        except (httpx.TransportError, http1.TransportError) as exc:  # refused, reset, dropped
            return f"connection error ({type(exc).__name__}: {self.redact(exc)})", None, True, None
        finally:
            # Cancelled (CancelledError is no Exception), failed or timed out: the connection may
            # still carry this request's answer, so it is closed, never reused.
            if complete:
                self.replicas.give_back(replica, connection)
            else:
                self.replicas.discard(connection)
        self.replicas.answered(replica)
        return self._judge(replica, resp)

    def _judge(self, replica: Replica, resp: Any) -> tuple[str, float | None, bool, dict | str | None]:
        """A read answer: (fault, Retry-After, False, outcome or None), as `_send` returns."""
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

    # ---- one streamed request ------------------------------------------------------------------

    async def open_stream(self, seq_id: str, body: dict[str, Any]) -> tuple | str:
        """A streamed answer whose head said 200: (replica, connection, response, release), where
        `release(reusable)` must be called once the stream is over; or the message of a
        context-length refusal. Faults before the head are retried as in `post`."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            replica = await self.replicas.acquire(seq_id)
            slots = self._semaphore()
            await slots.acquire()
            opened = None
            try:
                fault, server_says, connection_fault, opened = await self._send_stream(replica, payload, slots)
            finally:
                if not isinstance(opened, tuple):
                    slots.release()
            if opened is not None:
                return opened
            self.count_fault(fault)
            if connection_fault and await self.replicas.connection_failed(replica):
                continue
            attempt += 1
            await self.charge_retry(seq_id, replica, attempt, fault, server_says)

    async def _send_stream(self, replica: Replica, payload: bytes, slots: asyncio.Semaphore) -> tuple:
        import httpx

        self.stats.requests += 1
        connection = self.replicas.take(replica)
        complete = False
        try:
            if isinstance(connection, http1.Connection):
                resp = await connection.open_stream("/v1/completions", payload)
            else:
                resp = _HttpxStream(connection)
                await resp.open(payload)
            if resp.status_code != 200:
                await resp.read()
            complete = True
        except (httpx.TimeoutException, http1.Timeout) as exc:
            return f"timeout ({type(exc).__name__})", None, True, None
        except (httpx.TransportError, http1.TransportError) as exc:
            return f"connection error ({type(exc).__name__}: {self.redact(exc)})", None, True, None
        finally:
            if not complete:
                self.replicas.discard(connection)
        self.replicas.answered(replica)
        if resp.status_code == 200:
            def release(reusable: bool) -> None:
                slots.release()
                if reusable:
                    self.replicas.give_back(replica, connection)
                else:
                    self.replicas.discard(connection)
            return "", None, False, (replica, connection, resp, release)
        self.replicas.give_back(replica, connection)
        return self._judge(replica, resp)

    def count_fault(self, fault: str) -> None:
        self.stats.faults[fault_kind(fault)] = self.stats.faults.get(fault_kind(fault), 0) + 1

    async def charge_retry(self, seq_id: str, replica: Replica, attempt: int, fault: str,
                           server_says: float | None = None) -> None:
        """Charge a retry (or raise `ServerError` past the bounds) and wait before it."""
        bound = self.retry.charge(seq_id, attempt)
        if bound is not None:
            raise ServerError(f"{self.role} server {replica.shown}: gave up after {bound}; last error: {fault}")
        self.stats.retries += 1
        await self.sleep(self.retry.delay(attempt, server_says))

    # ---- internals -----------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.max_in_flight), loop
        return self._slots

    def redact(self, text: Any) -> str:
        return redact_text(str(text), self.secrets)


class _HttpxStream:
    """A streamed POST on a one-connection httpx client, shaped like `http1.StreamResponse`."""

    def __init__(self, client: Any):
        self.client, self.complete, self.content = client, False, b""
        self._resp: Any = None

    async def open(self, payload: bytes) -> None:
        request = self.client.build_request("POST", "/v1/completions", content=payload,
                                            headers={"Accept": "text/event-stream"})
        self._resp = await self.client.send(request, stream=True)
        self.status_code, self.headers = self._resp.status_code, self._resp.headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    async def read(self) -> bytes:
        self.content = await self._resp.aread()
        self.complete = True
        return self.content

    async def lines(self):
        async for line in self._resp.aiter_lines():
            yield line.encode()
        self.complete = True
