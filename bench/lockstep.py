"""The paper's scheduling, as a baseline: every sample of the batch advances in lock step.

The paper's scripts run Algorithm 1 over a batch of prompts step by step: each step sends one
k-token request for every unfinished sample at once (to the student or the teacher, whoever's
turn it is), waits for the last answer, runs the boundary predictor over all the new spans, cuts,
and only then starts the next step. tessy's engine has no such barrier: each sample requests,
labels and cuts on its own, and streams so a request stops at the cut.

`LockStep(engine)` puts the barrier back into a tessy `Engine`, so the two schedules differ in
nothing else (same prompts, backends, predictors, cut rules and budgets):

- a step's requests wait until every active sample has its request ready, then go out together;
- each sample's predictor call waits until every request of the step is answered (the
  classifier predictor batches calls that arrive together: one predictor pass per step);
- samples join at the next step after they start and leave when they end (a sliding batch of
  `concurrency` samples, as the runner keeps it full);
- no model reads a prompt ahead while the other writes the first turn: build the engine with
  `speed.read_ahead: false` (`SpeedConfig`), as `bench_servers.py` does.

Use it with the paper's generate-then-cut (`speed.stop_at_cut: false`, or `stream: off` with
`adaptive_k: false`), so each step asks for all k tokens. This is benchmark code: the product never waits at a barrier.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class StepBarrier:
    """A barrier whose party is whoever is a member now; members may join or leave at any time.
    `on_release(n)` is told how many waiters each round lets through."""

    def __init__(self, on_release: Callable[[int], None] | None = None) -> None:
        self.members = 0
        self.waiting = 0
        self.rounds = 0
        self._released = asyncio.Event()
        self._on_release = on_release

    def join(self, n: int = 1) -> None:
        self.members += n

    def leave(self) -> None:
        self.members -= 1
        self._release_if_full()

    async def wait(self) -> None:
        self.waiting += 1
        released = self._released
        await asyncio.sleep(0)  # samples started in the same tick join before the first step goes
        if not released.is_set() and not self._release_if_full():
            await released.wait()

    def _release_if_full(self) -> bool:
        if self.waiting == 0 or self.waiting < self.members:
            return False
        if self._on_release is not None:
            self._on_release(self.waiting)
        self._released.set()
        self._released, self.waiting = asyncio.Event(), 0
        self.rounds += 1
        return True


class LockStep:
    """Installs the paper's step barrier on an `Engine` (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.answers = StepBarrier()  # its members: the step's cohort, set when the step starts
        self.requests = StepBarrier(on_release=self.answers.join)  # every active sample is ready
        generate, new_state, release = engine.generate, engine.new_state, engine.release

        def joined(*args, **kwargs):
            state = new_state(*args, **kwargs)
            self.requests.join()
            return state

        def left(state) -> None:
            release(state)
            self.requests.leave()

        async def stepped_generate(state, *args, **kwargs):
            await self.requests.wait()
            try:
                return await generate(state, *args, **kwargs)
            finally:  # predictor calls come after every answer of the step is in
                try:
                    await self.answers.wait()
                finally:
                    self.answers.leave()

        engine.new_state, engine.release, engine.generate = joined, left, stepped_generate

    @property
    def steps(self) -> int:
        return self.requests.rounds
