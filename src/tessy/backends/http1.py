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
- `open_stream` sends a request and reads only the head: its `StreamResponse` yields the body
  line by line (server-sent events), each read bounded by `timeout_s`; `complete` says whether
  the body was read to its end (only then may the connection serve another request);
- failures raise `TransportError` (refused, reset, closed or garbled mid-response) or `Timeout`
  (the whole request took longer than `timeout_s`), and leave the connection closed; so does a
  `post` that is cancelled (`asyncio.CancelledError`) mid-exchange, whose answer would otherwise
  be read by the next request. The next `post` opens a fresh connection. A kept connection the
  server has closed meanwhile (its keep-alive timeout) is seen before reuse and replaced; one it
  closes as the request goes out, before answering anything (llama-server closes every connection
  after a streamed answer, though its head says keep-alive), gets the request once more on a new
  connection: no answer was begun, so none can be read twice. Nothing else is retried here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class TransportError(ConnectionError):
    """The connection failed or the response was not valid HTTP."""


class NotAnswered(TransportError):
    """The server closed the connection (or reset it) before any byte of an answer."""


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
                return await self._read_body(*await self._request(request))
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

    async def open_stream(self, path: str, body: bytes) -> "StreamResponse":
        """Send a POST and read the answer's head; the body is read through the result."""
        request = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
                   ).encode("latin-1").replace(b"Accept: application/json", b"Accept: text/event-stream") + body
        try:
            async with asyncio.timeout(self.timeout_s):
                version, status, headers = await self._request(request)
        except BaseException as exc:
            self.close()
            raise _transport_error(exc, self.timeout_s) from None
        return StreamResponse(self, version, status, headers)

    async def _request(self, request: bytes) -> tuple[str, int, dict[str, str]]:
        """Send `request` and read the answer's head, on the kept connection if there is one; if
        the server closes that before answering, once more on a new one (see the module docstring)."""
        kept = not (self._writer is None or self._reader.at_eof() or self._writer.is_closing())
        if not kept:
            await self._connect()
        try:
            self._writer.write(request)
            return await self._read_head()
        except NotAnswered:
            if not kept:
                raise
        await self._connect()
        self._writer.write(request)
        return await self._read_head()

    async def _read_head(self) -> tuple[str, int, dict[str, str]]:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise NotAnswered("the server closed the connection without answering") from None
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise NotAnswered(f"{type(exc).__name__}: {exc}") from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise TransportError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        return version, int(rest.split(" ", 1)[0]), headers

    async def _read_body(self, version: str, status: int, headers: dict[str, str]) -> Response:
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

    async def _body_parts(self, headers: dict[str, str]):
        """The body as it arrives (Content-Length, chunked, or until close)."""
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                part = await self._reader.read(min(left, 1 << 16))
                if not part:
                    raise TransportError("the connection closed mid-answer")
                left -= len(part)
                yield part
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await self._reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return
                part = await self._reader.readexactly(size)
                await self._reader.readexactly(2)
                yield part
        else:
            headers["connection"] = "close"
            while True:
                part = await self._reader.read(1 << 16)
                if not part:
                    return
                yield part

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


def _transport_error(exc: BaseException, timeout_s: float) -> BaseException:
    """What a failed exchange raises: `Timeout`, `TransportError`, or the exception itself
    (a cancellation, or anything unexpected)."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, Timeout):
        return Timeout(f"no answer within {timeout_s:g}s")
    if isinstance(exc, (Timeout, TransportError)):
        return exc
    if isinstance(exc, (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


class StreamResponse:
    """An answer whose body is read as it arrives (`Connection.open_stream`).

    `lines()` yields the body's lines (bytes, without line ends); `read()` the whole body. Each
    read waits at most the connection's `timeout_s`. A failure raises like `Connection.post` and
    closes the connection; `complete` turns true once the body was read to its end, and the
    connection is then closed unless it may be kept."""

    def __init__(self, connection: Connection, version: str, status: int, headers: dict[str, str]):
        self.connection, self.version = connection, version
        self.status_code, self.headers = status, headers
        self.complete = False
        self.content = b""
        self._parts = connection._body_parts(headers)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    async def _next_part(self) -> bytes | None:
        try:
            async with asyncio.timeout(self.connection.timeout_s):
                return await self._parts.__anext__()
        except StopAsyncIteration:
            self.complete = True
            if self.headers.get("connection", "").lower() == "close" or self.version == "HTTP/1.0":
                self.connection.close()
            return None
        except BaseException as exc:
            self.connection.close()
            raise _transport_error(exc, self.connection.timeout_s) from None

    async def read(self) -> bytes:
        parts = []
        while (part := await self._next_part()) is not None:
            parts.append(part)
        self.content = b"".join(parts)
        return self.content

    async def lines(self):
        buffer = b""
        while (part := await self._next_part()) is not None:
            buffer += part
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r")
        if buffer:
            yield buffer.rstrip(b"\r")
