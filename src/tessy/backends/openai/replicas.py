"""Replicas of one role: which replica serves which sequence, and a circuit breaker per replica,
so that a dead server is a pause, not a failure.

Owns the up/down state of every server (connections are `client.HTTPClient`'s). Promises:

- **Pinning**: a sequence (`seq_id`) is pinned to one replica that is up, the least loaded when
  first seen, until `release`, so the server's prefix cache keeps hitting; if its replica goes
  down it moves to another one that is up.
- **Circuit breaker**: a connection failure (refused, reset, dropped, timed out) makes the
  replica answer a probe (`GET /v1/models`, one probe shared by the requests failing together);
  if it does not, it is marked down and gets no new requests. It is probed again after
  `probe_interval_s`, then at growing intervals up to `max_probe_interval_s`, and used again as
  soon as a probe or any request to it succeeds.
- **When every replica is down**, `acquire` waits (probing meanwhile) up to `wait_s` seconds, then
  raises `base.ServersUnavailable` naming the role and the (redacted) URLs. Waiting spends no
  retry and no attempt.
- `stats` (the backend's counters) sees `replicas_down`, `breaker_trips` and `waiting` (requests
  waiting for a server) kept current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from tessy.backends.base import ServersUnavailable

log = logging.getLogger(__name__)


def base_url(url: str) -> tuple[str, str]:
    """(the server's base URL without userinfo or a trailing /v1, the userinfo "user:password")."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), f"{unquote(user)}:{unquote(password)}"


@dataclass
class Replica:
    """One server: its URL (`url` may hold userinfo and is used only to connect; `shown` is the
    redacted form for messages), and its breaker state."""

    url: str
    shown: str
    live: int = 0  # sequences pinned here
    down_since: float | None = None  # monotonic time it was marked down; None while up
    next_probe: float = 0.0
    probes: int = 0  # failed probes since it went down
    probing: bool = False
    check: Any = None  # the probe that confirms a connection failure, while it runs

    @property
    def up(self) -> bool:
        return self.down_since is None


class ReplicaSet:
    def __init__(
        self,
        replicas: list[Replica],
        *,
        role: str,
        stats: Any,
        ping: Callable[[Replica], Awaitable[bool]],
        wait_s: float = 300.0,
        probe_interval_s: float = 0.5,
        max_probe_interval_s: float = 10.0,
    ):
        self.replicas = replicas
        self.role = role
        self.stats = stats
        self.ping = ping  # does the replica answer?
        self.wait_s = float(wait_s)
        self.probe_interval_s = float(probe_interval_s)
        self.max_probe_interval_s = float(max_probe_interval_s)
        self._pinned: dict[str, Replica] = {}
        self._next = 0
        self._tasks: set[asyncio.Task] = set()  # probes running in the background

    async def aclose(self) -> None:
        """Stop the probes running in the background."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- pinning and the breaker ---------------------------------------------------------------

    async def acquire(self, seq_id: str) -> Replica:
        """The replica that serves `seq_id`: its pinned one while up, else the least loaded one
        that is up; waits while none is (see the module docstring)."""
        self._probe_due()
        replica = self._pinned.get(seq_id)
        if replica is not None and replica.up:
            return replica
        started = None
        try:
            while True:
                up = [r for r in self.replicas if r.up]
                if up:
                    return self._pin(seq_id, up)
                now = time.monotonic()
                if started is None:
                    started = now
                    self.stats.waiting += 1
                if now - started >= self.wait_s:
                    raise ServersUnavailable(
                        f"{self.role}: no server answered for {self.wait_s:g}s "
                        f"({', '.join(r.shown for r in self.replicas)}); the run stopped without spending "
                        "any sample's attempts: start the server(s) again and rerun the same command (a "
                        "vLLM CPU server that died with 'CPU Generator does not use offset' needs "
                        "--max-num-batched-tokens above its largest batch of prompts: docs/servers.md)")
                self._probe_due()
                await asyncio.sleep(min(0.2, self.wait_s - (now - started)))
        finally:
            if started is not None:
                self.stats.waiting -= 1

    def release(self, seq_id: str) -> None:
        replica = self._pinned.pop(seq_id, None)
        if replica is not None:
            replica.live -= 1

    async def connection_failed(self, replica: Replica) -> bool:
        """After a connection failure: true when the replica is (now) down.

        A probe decides, shared by the requests that fail together: a server that does not answer
        `GET /v1/models` is down (no retry is charged for it); one that answers had a fault of
        this one request, which is retried like any other."""
        if replica.up and not await self._check(replica):
            self._trip(replica)
        return not replica.up

    def _trip(self, replica: Replica) -> None:
        if not replica.up:
            return
        now = time.monotonic()
        replica.down_since, replica.next_probe, replica.probes = now, now + self.probe_interval_s, 0
        self.stats.replicas_down += 1
        self.stats.breaker_trips += 1
        others = sum(r.up for r in self.replicas)
        log.warning("%s server %s is down (a connection failed and it does not answer); %s", self.role,
                    replica.shown, f"using the {others} other replica(s)" if others
                    else f"waiting up to {self.wait_s:g}s for a server of this role to answer")

    async def _check(self, replica: Replica) -> bool:
        """One probe of the replica, shared by every request that asks while it runs."""
        loop = asyncio.get_running_loop()
        if replica.check is None or replica.check.get_loop() is not loop or replica.check.done():
            replica.check = self._spawn(self.ping(replica))
        return await asyncio.shield(replica.check)

    def answered(self, replica: Replica) -> None:
        """A request to the replica got an answer: it is up."""
        if not replica.up:
            log.warning("%s server %s answers again after %.1fs", self.role, replica.shown,
                        time.monotonic() - replica.down_since)
            replica.down_since = None
            self.stats.replicas_down -= 1

    def _pin(self, seq_id: str, up: list[Replica]) -> Replica:
        old = self._pinned.get(seq_id)
        if old is not None:
            old.live -= 1
        start, self._next = self._next, self._next + 1
        replica = min((up[(start + i) % len(up)] for i in range(len(up))), key=lambda r: r.live)
        replica.live += 1
        self._pinned[seq_id] = replica
        return replica

    def _probe_due(self) -> None:
        now = time.monotonic()
        for replica in self.replicas:
            if not replica.up and not replica.probing and now >= replica.next_probe:
                replica.probing = True
                self._spawn(self._probe(replica))

    async def _probe(self, replica: Replica) -> None:
        try:
            ok = await self.ping(replica)
        finally:
            replica.probing = False
        if ok:
            self.answered(replica)
        elif not replica.up:
            replica.probes += 1
            interval = min(self.max_probe_interval_s, self.probe_interval_s * 2 ** replica.probes)
            replica.next_probe = time.monotonic() + interval

    def _spawn(self, coroutine: Awaitable) -> asyncio.Future:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # keep a reference until done (the loop keeps only weak ones)
        task.add_done_callback(self._tasks.discard)
        return task
