"""The one HTTP client (`tessy.backends.openai.client`, aiohttp) against small asyncio socket
servers: chunked bodies, connections the server closes after an answer, a kept connection closed
as the next request goes out (llama-server does that after every streamed answer), one family of
faults; the backend over IPv6 loopback (`http://[::1]:PORT`); and prompt-cache counts of streams
stopped before vLLM's last event (the only one with `prompt_tokens_details`)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest

from tessy.backends.openai.client import ConnectionFault, HTTPClient, Timeout
from tests.fake_openai_server import FakeOpenAIServer
from tests.http_helpers import SAMPLING, SCRIPT, STOP, completions, make


def _content_length(head: bytes) -> int:
    return int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])


def test_client_reads_chunked_bodies_and_replaces_closed_connections():
    connections, seen = [], []

    async def handle(reader, writer):  # answers one request, chunked, then closes (keep-alive expiry)
        connections.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        body = await reader.readexactly(_content_length(head))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with HTTPClient({"Authorization": "Bearer k"}, timeout_s=5) as client:
            first = await client.request("POST", f"http://127.0.0.1:{port}/v1/completions", b'{"a": 1}')
            await asyncio.sleep(0.05)  # the server's FIN arrives
            second = await client.request("POST", f"http://127.0.0.1:{port}/v1/completions", b'{"b": 2}')
        server.close()
        return first, second

    first, second = asyncio.run(main())
    assert (first.status_code, first.json(), second.json()) == (200, {"a": 1}, {"b": 2})
    assert len(connections) == 2
    assert b"authorization: bearer k" in seen[0].lower() and seen[0].startswith(b"POST /v1/completions HTTP/1.1")


@pytest.mark.parametrize("streamed", [False, True])
def test_client_sends_again_when_a_kept_connection_closes_unanswered(streamed):
    # llama-server closes a connection after each streamed answer although its head says
    # keep-alive: the next request meets the close. It goes out once more on a new connection.
    served = []

    async def handle(reader, writer):  # answers the first request of a connection, drops the second
        for index in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
            if index:
                break
            served.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/completions"
        answers = []
        async with HTTPClient({}, timeout_s=5) as client:
            for body in (b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'):
                response = await client.request("POST", url, body, stream=streamed)
                if streamed:
                    lines = [line async for line in response.lines()]
                    response.close()
                    answers.append(json.loads(b"".join(lines)))
                else:
                    answers.append(response.json())
                await asyncio.sleep(0.05)  # the answer's connection is idle again when the server drops it
        server.close()
        return answers

    assert asyncio.run(main()) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert served == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']  # each answered once, on its own connection


def test_transport_failures_are_one_family():
    async def silent(reader, writer):  # reads the request, never answers
        await reader.read(1 << 16)
        await asyncio.sleep(5)

    async def main():
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        refused_port = free.getsockname()[1]
        free.close()  # nothing listens there now
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with HTTPClient({}, timeout_s=0.3) as client:
            with pytest.raises(ConnectionFault):
                await client.request("GET", f"http://127.0.0.1:{refused_port}/v1/models")
            with pytest.raises(Timeout):
                await client.request("POST", f"http://127.0.0.1:{port}/v1/completions", b"{}")
            with pytest.raises(Timeout):
                await client.request("POST", f"http://127.0.0.1:{port}/v1/completions", b"{}", stream=True)
        server.close()

    asyncio.run(main())


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class IPv6FakeServer(FakeOpenAIServer):
    """The fake vLLM-shaped server, listening on IPv6 loopback only."""

    @property
    def url(self) -> str:
        return f"http://[::1]:{self.port}"

    def start(self) -> "IPv6FakeServer":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "::1", self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-openai-server-ipv6", daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here: ::1 cannot be bound")
def test_backend_over_ipv6_loopback(smol_tokenizer):
    """A server at http://[::1]:PORT: readiness, a request and a streamed request, with the Host
    header in its bracketed form (the former client sent `::1:PORT`)."""
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with IPv6FakeServer("smol", script=script, decode=smol_tokenizer.decode) as fake:
        backend = make(fake, smol_tokenizer)
        assert backend.transport == "token_ids" and backend.streams_tokens

        async def run():
            generation = await backend.generate("s/student", [5, 6, 7], 4, SAMPLING, STOP)
            stream = backend.stream("t/student", [5, 6, 7], 4, SAMPLING, STOP)
            chunks = [chunk async for chunk in stream]
            await stream.aclose()
            await backend.aclose()
            return generation, [i for chunk in chunks for i in chunk]

        generation, streamed = asyncio.run(run())
        assert generation.token_ids == streamed == [script[(3 + i) % len(script)] for i in range(4)]
        hosts = {r["headers"]["host"] for r in fake.requests}
        assert hosts == {f"[::1]:{fake.port}"}
        assert len(completions(fake)) >= 3  # the probes, the request and the stream


def test_a_stream_stopped_before_vllms_usage_event_counts_its_cache_as_unknown(smol_tokenizer):
    """As vLLM streams: the usage on every event has no cache figure; only the last event (sent
    when the stream runs to its end) says how much of the prompt was cached. The server's own
    counters (`/metrics`) say it for both."""
    from tessy.backends.openai.cache import prompt_computed, usage_note

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, stream_delay_s=0.01,
                          cache_style="vllm") as fake:
        backend = make(fake, smol_tokenizer, stream=True)
        prompt = list(range(5, 45))

        async def run():
            whole = backend.stream("s/student", prompt, 3, SAMPLING, STOP)  # runs to its end
            [chunk async for chunk in whole]
            await whole.aclose()
            cut = backend.stream("s/student", prompt + [50, 51], 30, SAMPLING, STOP)
            await cut.__anext__()
            await cut.aclose()  # stopped at the cut: vLLM's last event never comes
            await backend.read_server_counters(set())
            return cut.finish_reason

        assert asyncio.run(run()) == "cancelled"
        body = [r["body"] for r in completions(fake) if r["body"].get("stream")][-1]
        assert body["stream_options"]["include_usage"] is True
    counters = backend.server_counters()
    assert (counters["completions"], counters["prompt_reported"], counters["prompt_unknown"]) == (2, 1, 1)
    assert counters["prompt_tokens"] == 40 + 42
    note = usage_note(counters)
    assert "unknown for 1/2 requests" in note and "no cache hits" not in note
    assert usage_note({"completions": 3, "prompt_reported": 0, "prompt_unknown": 0}).startswith(
        "the server does not report cached tokens")
    assert usage_note({"completions": 3, "prompt_reported": 3, "prompt_unknown": 0}) == ""
    # The server's count covers the stopped stream too: the second prompt found the first cached.
    assert counters["server_counted"] == 1 and counters["server_prompt_tokens"] == 82
    assert 40 <= counters["server_prompt_cached"] <= 42
    assert prompt_computed(counters) == (82 - counters["server_prompt_cached"], "its servers' own count")
