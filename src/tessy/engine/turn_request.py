"""`TurnRequest`: one streamed request that serves a turn's steps one after another.

Algorithm 1 lets the same model go on when a step is not cut. Asking for each step's k tokens in
a request of its own makes a long turn pay a request per k tokens: a round trip, the server
finding the sequence's prefix again and reading its last token once more, and a pause of the
sequence while the client decides. A `TurnRequest` asks once for all the tokens the turn may
still take and hands them out step by step; the cooperative loop stops it at the cut.

Promises:
- the request reads its next chunk only once the loop asks for more (`next`), so where it stops,
  and so what it generated, does not depend on timing (as `Pair.generate` promises);
- a step gets exactly the tokens a request of its own would have given it: what arrives past the
  step waits (`pending`) for the next step, so verdicts and cuts are those of step-sized requests
  wherever a model's draws depend only on the sequence and position (greedy, the in-process
  backend's seeded draws, a scripted backend); a server that seeds each request draws afresh;
- `close` stops the request (if still going) and returns what it generated; the request never
  outlives the sample (`cancel`).

Part of the speed layer (`tessy.engine.speed`); knows nothing of the pair but the one streamed
request it is given to run.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

#: `on_tokens(ids, done)` of a streamed request (`Pair.generate`): True stops it there.
OnTokens = Callable[[list[int], bool], Awaitable[bool]]
#: Starts the streamed request with the given `on_tokens`: (ids, whether it stopped, generated).
StreamedRequest = Callable[[OnTokens], Awaitable[tuple[list[int], bool, int]]]


class TurnRequest:
    """A streamed request (`request`: one model continuing its context), handed out as the loop
    asks for it."""

    def __init__(self, request: StreamedRequest):
        self.pending: list[int] = []  # ids that arrived but belong to a later step
        self.received = 0  # ids that arrived so far
        self.over = False  # no more ids will come
        self._chunks: asyncio.Queue = asyncio.Queue()
        self._reply: asyncio.Future | None = None  # the request waits on it before reading on
        self._task = asyncio.ensure_future(self._run(request))

    async def _run(self, request: StreamedRequest) -> tuple[list[int], bool, int]:
        try:
            return await request(self._arrived)
        finally:
            self._chunks.put_nowait(None)  # the request is over (or failed: `close` raises it)

    async def _arrived(self, ids: list[int], done: bool) -> bool:
        reply = asyncio.get_running_loop().create_future()
        self._chunks.put_nowait((ids, reply))
        return await reply  # True: stop here

    async def next(self) -> list[int] | None:
        """The next ids (those held back for this step first), or None once the request is over."""
        if self.pending:
            ids, self.pending = self.pending, []
            return ids
        if self.over:
            return None
        self._answer(False)  # read on
        item = await self._chunks.get()
        if item is None:
            self.over = True
            return None
        ids, self._reply = item
        self.received += len(ids)
        return ids

    @property
    def handed_out(self) -> int:
        """Ids given to steps so far (those held back for a later step not counted)."""
        return self.received - len(self.pending)

    async def close(self) -> tuple[bool, int]:
        """Stop the request where it is: (whether the model stopped it, tokens generated)."""
        self._answer(True)
        _, stopped, generated = await self._task
        self.over = True
        return stopped, generated

    def cancel(self) -> None:
        """Drop the request (the sample is ending on an error or a cancellation)."""
        self._answer(True)
        self._task.cancel()

    def _answer(self, stop: bool) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(stop)
        self._reply = None
