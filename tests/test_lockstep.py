"""The lock-step baseline of bench/lockstep.py: no sample starts a step before every active sample
has finished the last one, samples join and leave between steps, and a real run under it writes
the same kind of records as one without it."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest

from bench.lockstep import LockStep


class RecordingEngine:
    """An engine stand-in: `generate` takes a random time and logs when each step starts and ends."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []  # (event, sample, step)
        self.rng = random.Random(0)

    def new_state(self, sample_id):
        return SimpleNamespace(sample_id=sample_id, steps=0)

    def release(self, state) -> None:
        pass

    async def generate(self, state, *args, **kwargs):
        self.log.append(("start", state.sample_id, state.steps))
        await asyncio.sleep(self.rng.random() * 0.01)
        self.log.append(("end", state.sample_id, state.steps))
        state.steps += 1
        return [], False, 0


async def sample(engine, sample_id: str, steps: int, late: bool = False) -> None:
    while late and not any(event == "end" for event, _, _ in engine.log):
        await asyncio.sleep(0.001)  # late: starts once the first step has begun to end, not on a clock
    state = engine.new_state(sample_id)
    try:
        for _ in range(steps):
            await engine.generate(state)
            await asyncio.sleep(engine.rng.random() * 0.005)  # label and cut
    finally:
        engine.release(state)


def lockstep_rounds(log: list[tuple[str, str, int]]) -> list[list[str]] | None:
    """The samples of each round if every round's requests all start before any of them ends and
    the next round starts only once all have ended; None if the log breaks that."""
    rounds, current, open_requests = [], set(), set()
    for event, sample_id, _ in log:
        if event == "start":
            if (current and not open_requests) or sample_id in current:
                return None  # started after its round's requests had ended, or ran a step ahead
            current.add(sample_id)
            open_requests.add(sample_id)
        else:
            open_requests.discard(sample_id)
            if not open_requests:
                rounds.append(sorted(current))
                current = set()
    return rounds


def run_samples(engine, late: bool = True) -> None:
    async def main():
        # different lengths (samples leave at different steps) and one that starts late (joins)
        await asyncio.gather(sample(engine, "a", 5), sample(engine, "b", 2), sample(engine, "c", 4),
                             *([sample(engine, "d", 3, late=True)] if late else []))

    asyncio.run(main())


def test_no_request_starts_before_every_answer_of_the_step_is_in():
    engine = RecordingEngine()
    lockstep = LockStep(engine)
    run_samples(engine)
    rounds = lockstep_rounds(engine.log)
    assert rounds is not None, engine.log
    assert lockstep.steps == len(rounds) == 5
    assert rounds[0] == ["a", "b", "c"] and "d" in rounds[1] and rounds[-1] == ["a"]
    assert sum(len(r) for r in rounds) == 5 + 2 + 4 + 3
    assert lockstep.requests.members == 0 and lockstep.answers.members == 0


def test_without_the_barrier_samples_run_ahead():
    """The check above can fail: the same samples without LockStep do not keep in step."""
    engine = RecordingEngine()
    run_samples(engine)
    assert lockstep_rounds(engine.log) is None


@pytest.mark.real_models
def test_a_real_run_under_lockstep_writes_every_record(tmp_path):
    """The demo pair in process under the barrier: every prompt gets a record."""
    from tessy.config import SynthesizeConfig
    from tessy.records import read_records
    from tessy.runner import build_engine, synthesize

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "What is {i} plus {i + 2}? Explain."}}\n'
                               for i in range(3)))
    config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "run"), max_tokens=40, max_answer_tokens=8,
                              concurrency=3, progress=False)
    engine = build_engine(config)
    lockstep = LockStep(engine)
    report = synthesize(config, engine=engine)
    records = list(read_records(tmp_path / "run" / "records.jsonl"))
    assert report.written == 3 and len(records) == 3
    assert lockstep.steps >= max(r["totals"]["steps"] for r in records)
    assert lockstep.requests.members == 0 and lockstep.answers.members == 0
