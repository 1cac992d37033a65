"""A minimal keep-alive HTTP/1.1 client for JSON POSTs to a plain-http server, on asyncio streams.

Why: the HTTP backend sends one small request per TESSY step, hundreds in flight. httpx spends
~0.6 ms of CPU per request (h11 state machine, anyio, pool bookkeeping); this client spends
~0.1 ms, so one process drives a GPU server at thousands of steps/s. It is used for `http://`
servers reached without a proxy; httpx serves everything else (https, proxies, readiness).

Owns: one TCP connection (`Connection`), opened on first use and reopened after any failure.
Promises:
- `post` writes the request in one write and reads one response: `Content-Length`, chunked, or
  until close; the connection is kept for the next request unless the server says `close`;
- a response has httpx's attribute names (`status_code`, `headers.get`, `content`, `text`,
  `json()`), so callers handle both clients alike;
- failures raise `TransportError` (refused, reset, closed or garbled mid-response) or `Timeout`
  (the whole request took longer than `timeout_s`), and leave the connection closed; so does a
  `post` that is cancelled (`asyncio.CancelledError`) mid-exchange, whose answer would otherwise
  be read by the next request. The next `post` opens a fresh connection. A kept connection the server has closed meanwhile (its keep-alive
  timeout) is seen before reuse and replaced, never sent on; nothing is retried here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class TransportError(ConnectionError):
    """The connection failed or the response was not valid HTTP."""


class Timeout(TimeoutError):
    """The request did not complete in time."""


class Response:
    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Connection:
    """One keep-alive connection to `base_url` (http only)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, connect_timeout_s: float = 30.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"http1.Connection serves http:// URLs only, not {base_url}")
        self.host, self.port = parts.hostname or "localhost", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        host = self.host if self.port == 80 else f"{self.host}:{self.port}"
        fixed = {"Host": host, "Accept": "application/json", "Connection": "keep-alive", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items() if k.lower() != "content-length")
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> Response:
        request = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
                   ).encode("latin-1") + body
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._writer is None or self._reader.at_eof() or self._writer.is_closing():
                    await self._connect()
                return await self._exchange(request)
        except TimeoutError:
            self.close()
            raise Timeout(f"no complete answer within {self.timeout_s:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # cancelled mid-exchange: the answer may still arrive on this socket
            self.close()
            raise

    async def _connect(self) -> None:
        self.close()
        async with asyncio.timeout(self.connect_timeout_s):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def _exchange(self, request: bytes) -> Response:
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise TransportError("the server closed the connection without answering") from None
            raise
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise TransportError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(rest.split(" ", 1)[0])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await self._reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = await self._read_chunked()
        else:  # the body runs until the server closes the connection
            content = await self._reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            self.close()
        return Response(status, headers, content)

    async def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def aclose(self) -> None:
        writer = self._writer
        self.close()
        if writer is not None:
            try:
                await writer.wait_closed()
            except OSError:
                pass
