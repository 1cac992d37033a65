"""The lean HTTP/1.1 client (`tessy.backends.http1`) against small asyncio socket servers: chunked
bodies, connections the server closes after an answer, and a kept connection closed as the next
request goes out (llama-server does that after every streamed answer)."""

from __future__ import annotations

import asyncio
import json

import pytest


def test_http1_client_reads_chunked_bodies_and_replaces_closed_connections():
    from tessy.backends import http1

    connections = []

    async def handle(reader, writer):  # answers one request, chunked, then closes (keep-alive expiry)
        connections.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        body = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = http1.Connection(f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}, timeout_s=5)
        first = await conn.post("/v1/completions", b'{"a": 1}')
        await asyncio.sleep(0.05)  # the server's FIN arrives
        second = await conn.post("/v1/completions", b'{"b": 2}')
        await conn.aclose()
        server.close()
        return first, second

    first, second = asyncio.run(main())
    assert (first.status_code, first.json(), second.json()) == (200, {"a": 1}, {"b": 2})
    assert len(connections) == 2


@pytest.mark.parametrize("streamed", [False, True])
def test_http1_client_sends_again_when_a_kept_connection_closes_unanswered(streamed):
    # llama-server closes a connection after each streamed answer although its head says
    # keep-alive: the next request meets the close. It goes out once more on a new connection.
    from tessy.backends import http1

    served = []

    async def handle(reader, writer):  # answers the first request of a connection, drops the second
        for index in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            body = await reader.readexactly(length)
            if index:
                break
            served.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        conn = http1.Connection(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", {}, timeout_s=5)
        answers = []
        for body in (b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'):
            if streamed:
                response = await conn.open_stream("/v1/completions", body)
                answers.append(json.loads(await response.read()))
            else:
                answers.append((await conn.post("/v1/completions", body)).json())
        await conn.aclose()
        server.close()
        return answers

    assert asyncio.run(main()) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert served == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']  # each answered once, on its own connection
