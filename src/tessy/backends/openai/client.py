"""The one HTTP client of the OpenAI backend, on aiohttp: requests, their connections, and the one
family of transport faults.

Why aiohttp: `bench/bench_http.py` compares the client CPU per request with 256 requests in
flight; the project keeps a hand-written client only while it costs at least 2x less CPU than the
best library. aiohttp cost 1.81x the former hand-written client's, a third of httpx's (figures in
bench/RESULTS.md, "One HTTP client").

Owns an aiohttp session per event loop (its pool of keep-alive connections to every replica of a
role), closed by `aclose` or when the loop's `asyncio.run` ends. Promises:

- `request(method, url, body, stream=...)`: a non-streamed request is sent and read whole within
  `timeout_s`; a streamed one returns once the answer's head is read, and each later read of its
  body (`Response.lines`, `Response.read`) waits at most `timeout_s`.
- **A connection is reused only after an answer read to its end.** A request that fails, times
  out or is cancelled (`asyncio.CancelledError`) mid-exchange, and a stream closed before its end
  (`Response.close`), closes its connection: the next request never reads an old answer.
- A request the server closed its connection on without answering (a kept connection that it
  closed meanwhile: llama-server closes one after each streamed answer, though its head says
  keep-alive) goes out once more, at once, on another connection: no answer was begun, so none
  can be read twice. Nothing else is retried here (`exchange` and `retry` own that).
- **One family of faults**: every failure of the transport raises `HTTPFault`, either `Timeout`
  or `ConnectionFault` (refused, reset, dropped, not HTTP); no aiohttp exception escapes.
- Plain http and https, proxies from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`),
  IPv6 literals (`http://[::1]:8000`, whose Host header is `[::1]:8000`).
- `run_sync` runs a coroutine to its end from synchronous code (the readiness checks), in a thread
  of its own when this thread already runs an event loop.

aiohttp is imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

T = TypeVar("T")

#: A stream's unread events are held to this many bytes (aiohttp pauses reading past twice this):
#: a stream stopped at the cut leaves the rest unread in the socket, never parsed.
STREAM_BUFFER = 1 << 12


class HTTPFault(Exception):
    """A request failed in transport: no usable answer came (see `Timeout`, `ConnectionFault`)."""


class Timeout(HTTPFault):
    """The answer (or, for a stream, its next part) did not come within the time allowed."""


class ConnectionFault(HTTPFault):
    """The connection was refused, reset or dropped, or what came back was not HTTP."""


class Response:
    """One answer: `status_code`, `headers` (case-insensitive), and its body: `content` once read
    (always, for a non-streamed request), else `lines()` or `read()`. `complete` is true once the
    body was read to its end; `close()` then keeps the connection for the next request, and
    otherwise closes it."""

    def __init__(self, raw: Any, content: bytes | None = None):
        self._raw = raw
        self.status_code: int = raw.status
        self.headers = raw.headers
        self.content = content if content is not None else b""
        self.complete = content is not None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    async def read(self) -> bytes:
        """The rest of the body."""
        try:
            self.content = await self._raw.read()
        except BaseException as exc:
            self.close()
            raise _as_fault(exc) from None
        self.complete = True
        return self.content

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines as they arrive (bytes, without line ends), of any length."""
        buffer = b""
        try:
            while True:
                part = await self._raw.content.readany()
                if not part:
                    break
                buffer += part
                *whole, buffer = buffer.split(b"\n")
                for line in whole:
                    yield line.rstrip(b"\r")
        except BaseException as exc:  # GeneratorExit (the reader stopped) included
            self.close()
            fault = _as_fault(exc)
            if fault is exc:
                raise
            raise fault from None
        self.complete = True
        if buffer:
            yield buffer.rstrip(b"\r")

    def close(self) -> None:
        if self.complete:
            self._raw.release()
        else:
            self._raw.close()


class HTTPClient:
    """Requests to one role's servers, with `headers` on each (see the module docstring)."""

    def __init__(self, headers: dict[str, str], timeout_s: float, connect_timeout_s: float | None = None):
        self.headers = {"Accept": "application/json", **headers}
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = min(self.timeout_s, 30.0) if connect_timeout_s is None else connect_timeout_s
        self._session: Any = None
        self._loop: Any = None
        self._guard: asyncio.Task | None = None
        self._proxies: dict[str, tuple[Any, Any]] = {}  # scheme://host:port -> (proxy, its auth), read once

    async def request(self, method: str, url: str, body: bytes | None = None, *, stream: bool = False,
                      timeout_s: float | None = None) -> Response:
        """Send one request; the answer read whole, or (`stream`) its head (see the module docstring)."""
        import aiohttp

        session = self._session_here()
        seconds = self.timeout_s if timeout_s is None else float(timeout_s)
        connect = min(seconds, self.connect_timeout_s)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds) if stream \
            else aiohttp.ClientTimeout(total=seconds, sock_connect=connect)
        headers = {"Accept": "text/event-stream"} if stream else None
        for resend in (False, True):
            raw = None
            try:
                proxy, proxy_auth = self._proxy_for(url)
                raw = await session.request(method, url, data=body, headers=headers, timeout=timeout,
                                            proxy=proxy, proxy_auth=proxy_auth,
                                            read_bufsize=STREAM_BUFFER if stream else 1 << 16)
                if stream:
                    return Response(raw)
                answer = Response(raw, await raw.read())
                answer.close()  # read whole: the connection goes back to the pool
                return answer
            except BaseException as exc:
                if raw is not None:
                    raw.close()
                fault = _as_fault(exc)
                if fault is exc and not isinstance(exc, HTTPFault):
                    raise  # a cancellation, or a bug: as it is
                if raw is None and not resend and _unanswered(exc):
                    continue
                raise fault from None
        raise AssertionError("unreachable")

    def _proxy_for(self, url: str) -> tuple[Any, Any]:
        """The proxy the environment names for `url`'s server, read once per server (aiohttp's own
        `trust_env` reads the environment and ~/.netrc on every request)."""
        origin = "/".join(url.split("/", 3)[:3])
        if origin not in self._proxies:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                self._proxies[origin] = get_env_proxy_for_url(URL(origin))
            except LookupError:
                self._proxies[origin] = (None, None)
        return self._proxies[origin]

    def _session_here(self) -> Any:
        """The session of the running event loop (connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=0)  # the bound on requests is `exchange`'s
            # No cookies, no compression asked for (so none to undo): an API client needs neither.
            self._session = aiohttp.ClientSession(
                headers=self.headers, connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding",), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=self.connect_timeout_s))
            self._loop = loop
            self._guard = loop.create_task(_close_at_loop_end(self._session))
        return self._session

    async def aclose(self) -> None:
        session, guard = self._session, self._guard
        self._session = self._loop = self._guard = None
        if guard is not None and guard.get_loop() is asyncio.get_running_loop():
            guard.cancel()
            await asyncio.gather(guard, return_exceptions=True)

    async def __aenter__(self) -> "HTTPClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def _close_at_loop_end(session: Any) -> None:
    """Wait until cancelled (`aclose`, or `asyncio.run` ending, which cancels what is left), then
    close the session: its connections never outlive their loop unclosed."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await session.close()


def _as_fault(exc: BaseException) -> BaseException:
    """What a failed exchange raises: a `Timeout` or `ConnectionFault` for any failure of the
    transport; anything else (a cancellation, GeneratorExit, a bug) as it is."""
    import aiohttp

    if isinstance(exc, HTTPFault):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):  # before OSError: a subclass
        return Timeout(f"{type(exc).__name__}: no answer in time")
    if isinstance(exc, (aiohttp.ClientError, OSError, ValueError, asyncio.IncompleteReadError)):
        return ConnectionFault(f"{type(exc).__name__}: {exc}")
    return exc


def _unanswered(exc: BaseException) -> bool:
    """Whether the server closed or reset the connection before any answer (never a refusal)."""
    import aiohttp

    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError) \
        and exc.errno in (errno.ECONNRESET, errno.EPIPE)


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine `make()` to its end from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # this thread's loop is busy: another thread
        return pool.submit(lambda: asyncio.run(make())).result()
