"""Mid-trace resume (`tessy.journal`): a sample goes on from its last closed span after a restart.

The models here write what their context and seed decide (no per-process state, like a real
seeded model), so a restarted run can be compared token for token with an uninterrupted one.
The kill -9 with the real demo pair is in test_synthesize_real.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessy.backends.base import Backend, Generation, SamplingParams
from tessy.backends.fake import _Chunks
from tessy.config import SynthesizeConfig
from tessy.engine import Engine, Limits, Party
from tessy.journal import JOURNAL_FILE, Journal
from tessy.records import validate_record
from tessy.runner import build_engine, synthesize, synthesize_async
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_engine import KeywordPredictor, PlainTestFormat, ThinkTestFormat

pytestmark = pytest.mark.slow  # whole runs stopped, resumed and compared, most of them

ROOT = Path(__file__).parent.parent
STUDENT = "Okay, so we add them. Wait, so the sum is there. Hmm, okay so fine. "
TEACHER = "Three plus four is seven. So we add one more. Okay, seven plus one is eight. Wait, we check each digit. "


class ContextBackend(Backend):
    """Continues a context with tokens of a cycling script chosen by the context's length and the
    seed only, delivered one at a time; a stop token once the context reaches `stop_at`."""

    streams_tokens = True

    def __init__(self, tokenizer, script: str, name: str, stop_at: int = 10**9, delay_s: float = 0.0,
                 end: str = ""):
        self.tokenizer, self.model_name, self.max_context = tokenizer, name, 4096
        self.script = tokenizer.encode(script, add_special_tokens=False)
        self.end = tokenizer.encode(end, add_special_tokens=False) if end else []
        self.stop_at, self.delay_s = stop_at, delay_s
        self.generated = 0

    async def _make(self, context_ids, max_new_tokens, sampling: SamplingParams) -> Generation:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        new, finish = [], "length"
        for i in range(max_new_tokens):
            position = len(context_ids) + i
            if position >= self.stop_at:
                new.append(self.end[position - self.stop_at] if position - self.stop_at < len(self.end)
                           else self.tokenizer.eos_token_id)
                if new[-1] == self.tokenizer.eos_token_id:
                    finish = "stop"
                    break
                continue
            new.append(self.script[(position + (sampling.seed or 0)) % len(self.script)])
        return Generation(new, self.tokenizer.decode(new), finish)

    async def generate(self, seq_id, context_ids, max_new_tokens, sampling: SamplingParams,
                       stop_token_ids=frozenset()) -> Generation:
        generation = await self._make(context_ids, max_new_tokens, sampling)
        self.generated += len(generation.token_ids)
        return generation

    def stream(self, seq_id, context_ids, max_new_tokens, sampling, stop_token_ids=frozenset()):
        return _Counted(self, self._make(context_ids, max_new_tokens, sampling))


class _Counted(_Chunks):
    """One token at a time; the backend counts the tokens delivered (those past a stop were never made)."""

    def __init__(self, backend: ContextBackend, call):
        super().__init__(call, 1)
        self.backend = backend

    async def aclose(self) -> None:
        await super().aclose()
        self.backend.generated += self.generated


def make_engine(smol, gemma, fmt=None, delay_s=0.0, stop_at=90, seed=3, **limits) -> Engine:
    fmt = fmt or PlainTestFormat()
    end = "\n</think>" if fmt.has_thinking else ""
    student = Party("student", ContextBackend(smol, STUDENT, "student", stop_at, delay_s, end), fmt,
                    KeywordPredictor(), k=5)
    teacher = Party("teacher", ContextBackend(gemma, TEACHER, "teacher", stop_at, delay_s, end), fmt,
                    KeywordPredictor(), k=5)
    return Engine(student, teacher, Limits(**{"max_tokens": 60, "max_answer_tokens": 12, **limits}), seed=seed)


def journal_lines(folder: Path) -> list[dict]:
    path = folder / JOURNAL_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def comparable(result) -> tuple:
    return (result.assistant_content, [span.as_dict() for span in result.spans], result.finish_reason,
            result.generated, result.discarded, result.steps)


# ---------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("fmt,stop_at", [(PlainTestFormat(), 90), (ThinkTestFormat(), 50)], ids=["plain", "thinking"])
def test_a_sample_resumed_from_any_closed_turn_ends_as_an_uninterrupted_one(tmp_path, smol_tokenizer, gemma_tokenizer,
                                                                            fmt, stop_at):
    messages = [{"role": "user", "content": "What is 3+4?"}]
    whole = tmp_path / "whole"
    whole.mkdir()
    engine = make_engine(smol_tokenizer, gemma_tokenizer, fmt, stop_at=stop_at)
    engine.observer = Journal(whole, "fp")
    reference = asyncio.run(engine.run("s", messages))
    engine.observer.close()
    lines = (whole / JOURNAL_FILE).read_bytes().splitlines(keepends=True)
    assert len(lines) >= 6 and len(reference.spans) >= 4
    assert any("step" in json.loads(line) for line in lines)  # a span longer than a step: written ahead too
    # The thinking ended (the answer is written again after a restart), or the response did.
    assert json.loads(lines[-1])["finish"] == ("thinking_done" if fmt.has_thinking else reference.finish_reason)
    assert not fmt.has_thinking or reference.spans[-1].section == "answer"
    for turns in sorted({1, 2, len(lines) // 2, len(lines) - 1, len(lines)}):
        folder = tmp_path / f"after-{turns}"
        folder.mkdir()
        (folder / JOURNAL_FILE).write_bytes(b"".join(lines[:turns]))  # the process died here
        engine = make_engine(smol_tokenizer, gemma_tokenizer, fmt, stop_at=stop_at)
        engine.observer = Journal(folder, "fp")
        result = asyncio.run(engine.run("s", messages))
        engine.observer.close()
        before = json.loads(lines[turns - 1])
        # resumed inside a turn whose request was going on: that request counts, and where the
        # turn goes on a new one is made
        assert result.steps - reference.steps in ((0, 1) if "step" in before else (0,)), turns
        assert comparable(result)[:-1] == comparable(reference)[:-1], turns
        closed = sum("step" not in json.loads(line) for line in lines[:turns])
        assert result.extra == {"resumed": {"turns": closed, "tokens": before["generated"]}}
        # Only what came after the last closed turn was generated again.
        generated_now = sum(party.backend.generated for party in engine.parties.values())
        assert generated_now == reference.generated - before["generated"]
        # The journal goes on where it stopped: the same lines as the uninterrupted run's (but the
        # request count, as above).
        again = [json.loads(line) for line in (folder / JOURNAL_FILE).read_bytes().splitlines()]
        run_marks = ("wall_s", "generate_s", "predict_s", "steps")
        strip = lambda line: {k: v for k, v in line.items() if k not in run_marks}  # noqa: E731
        assert [strip(line) for line in again] == [strip(json.loads(line)) for line in lines]


def test_a_chain_for_another_prompt_or_that_does_not_rebuild_is_ignored(tmp_path, smol_tokenizer, gemma_tokenizer):
    messages = [{"role": "user", "content": "What is 3+4?"}]
    engine = make_engine(smol_tokenizer, gemma_tokenizer)
    engine.observer = Journal(tmp_path, "fp")
    reference = asyncio.run(engine.run("s", messages))
    engine.observer.close()
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines(keepends=True)

    def rerun(journal_bytes: bytes, prompt="What is 3+4?"):
        (tmp_path / JOURNAL_FILE).write_bytes(journal_bytes)
        engine = make_engine(smol_tokenizer, gemma_tokenizer)
        engine.observer = Journal(tmp_path, "fp")
        result = asyncio.run(engine.run("s", [{"role": "user", "content": prompt}]))
        engine.observer.close()
        return result

    # Another prompt under the same id: the chain is ignored (and reset), the sample starts afresh.
    other = rerun(b"".join(lines[:3]), prompt="What is 5+6?")
    assert other.extra is None and other.generated > 0
    from tessy.records import prompt_sha256

    new_chain = journal_lines(tmp_path)  # the old chain is gone: only the new prompt's, from turn 1
    closed = [line["n"] for line in new_chain if "step" not in line]
    assert closed == list(range(1, len(closed) + 1))
    assert {line["prompt"] for line in new_chain} == {prompt_sha256([{"role": "user", "content": "What is 5+6?"}])}
    # A gap in the chain, or ids that do not rebuild the recorded lengths: afresh, never mixed.
    turns = [line for line in lines if "step" not in json.loads(line)]
    gap = rerun(turns[0] + turns[2])
    assert gap.extra is None and comparable(gap) == comparable(reference)
    bad = json.loads(turns[1])
    bad["ids"]["student"] = bad["ids"]["student"] + [1]
    mixed = rerun(b"".join(lines[:lines.index(turns[1])]) + (json.dumps(bad) + "\n").encode())
    assert mixed.extra is None and comparable(mixed) == comparable(reference)
    steps = [line for line in lines if "step" in json.loads(line)]
    out_of_order = rerun(b"".join(lines[:lines.index(steps[0])]) + steps[0] + steps[0])
    assert out_of_order.extra is None and comparable(out_of_order) == comparable(reference)


def test_journal_opens_compacted_tolerating_torn_lines_and_other_configs(tmp_path):
    line = {"id": "a", "prompt": "p", "fp": "fp", "n": 1, "ids": {}, "span": None, "next": "teacher", "empty": 1,
            "finish": None, "lengths": {}, "generated": 1, "steps": 1, "generate_s": {}, "predict_s": 0.0}
    rows = [line, {**line, "id": "done"}, {**line, "id": "other-config", "fp": "zz"}, {**line, "id": "b"},
            {"id": "b", "reset": True}, {**line, "id": "c"}]
    path = tmp_path / JOURNAL_FILE
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"id": "c", "prompt": "p", "fp": "f')
    journal = Journal(tmp_path, "fp", done={"done"})
    assert set(journal._index) == {"a", "c"}  # done, another config's, reset and the torn tail are gone
    journal.close()
    assert [json.loads(raw)["id"] for raw in path.read_text().splitlines()] == ["a", "c"]
    assert not path.with_name(JOURNAL_FILE + ".tmp").exists()
    Journal(tmp_path, "fp", overwrite=True).close()
    assert path.read_text() == ""


def test_dead_lines_are_compacted_while_the_run_goes_on(tmp_path, smol_tokenizer, gemma_tokenizer):
    journal = Journal(tmp_path, "fp", sync_s=0, compact_bytes=2000)
    engine = make_engine(smol_tokenizer, gemma_tokenizer)
    engine.observer = journal
    for index in range(6):
        asyncio.run(engine.run(f"s{index}", [{"role": "user", "content": f"What is {index}+4?"}]))
        journal.done(f"s{index}")
    assert journal._index == {} and (tmp_path / JOURNAL_FILE).stat().st_size <= 2000  # six samples' lines are far more
    journal.close()
    assert (tmp_path / JOURNAL_FILE).stat().st_size == 0


# ---------------------------------------------------------------------------- the runner


def write_prompts(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i + 3}?"}) + "\n"
                            for i in range(count)))
    return path


def records(folder: Path) -> dict[str, dict]:
    return {record["id"]: record for record in map(json.loads, (folder / "records.jsonl").read_text().splitlines())}


def without_run_marks(record: dict) -> dict:
    """A record less what a restart may change: timings, the resumed mark and (resumed inside a
    turn) one more request in `totals.steps`."""
    marks = ("timings", "resumed")
    return {key: value for key, value in record.items() if key not in marks} | {
        "totals": {key: value for key, value in record["totals"].items() if key != "steps"}}


@pytest.fixture(scope="module")
def reference(smol_tokenizer, gemma_tokenizer, tmp_path_factory):
    """Six prompts run without a break."""
    root = tmp_path_factory.mktemp("reference")
    prompts = write_prompts(root / "prompts.jsonl", 6)
    config = SynthesizeConfig(input=str(prompts), output=str(root / "run"), progress=False, concurrency=3, seed=3)
    engine = make_engine(smol_tokenizer, gemma_tokenizer)
    report = synthesize(config, engine=engine)
    assert report.written == 6 and report.resumed == 0
    assert report.generated == sum(party.backend.generated for party in engine.parties.values())
    assert not journal_lines(root / "run")  # every record written: the journal is left empty
    return prompts, records(root / "run")


def test_a_run_stopped_mid_way_resumes_and_writes_the_same_records_once(tmp_path, smol_tokenizer, gemma_tokenizer,
                                                                         reference):
    prompts, expected = reference
    out = tmp_path / "run"
    config = SynthesizeConfig(input=str(prompts), output=str(out), progress=False, concurrency=3, seed=3,
                              journal_sync_s=0.05)

    async def stopped_after(turns: int) -> None:
        engine = make_engine(smol_tokenizer, gemma_tokenizer, delay_s=0.002)
        task = asyncio.create_task(synthesize_async(config, engine=engine))
        while len((out / JOURNAL_FILE).read_bytes().splitlines() if (out / JOURNAL_FILE).exists() else []) < turns:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stopped_after(25))
    done_before = set(records(out)) if (out / "records.jsonl").exists() else set()
    assert len(done_before) < 6
    # A torn last line, as a crash mid-write leaves it.
    with open(out / JOURNAL_FILE, "ab") as file:
        file.write(b'{"id": "q5", "prompt": "0123", "fp": "')
    engine = make_engine(smol_tokenizer, gemma_tokenizer)
    report = synthesize(dataclasses.replace(config, journal_sync_s=5.0), engine=engine)
    got = records(out)
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 6 and sorted(got) == sorted(expected)  # every prompt exactly once
    assert report.written == 6 - len(done_before) and report.skipped_done == len(done_before)
    for sample_id, record in got.items():
        validate_record(record)
        assert without_run_marks(record) == without_run_marks(expected[sample_id]), sample_id
    resumed = [record["resumed"] for sample_id, record in got.items() if sample_id not in done_before and "resumed" in record]
    assert report.resumed == len(resumed) >= 1 and all(mark["turns"] >= 1 and mark["tokens"] >= 1 for mark in resumed)
    # Honest counts: records count both processes; this one generated only the rest.
    rerun_ids = set(got) - done_before
    from_scratch = sum(got[sample_id]["totals"]["generated"] for sample_id in rerun_ids)
    assert report.resumed_tokens == sum(mark["tokens"] for mark in resumed)
    assert report.generated == from_scratch - report.resumed_tokens < from_scratch
    assert report.generated == sum(party.backend.generated for party in engine.parties.values())


def test_a_journal_of_another_config_is_ignored(tmp_path, smol_tokenizer, gemma_tokenizer, reference):
    prompts, expected = reference
    out = tmp_path / "run"
    config = SynthesizeConfig(input=str(prompts), output=str(out), progress=False, concurrency=3, seed=3, limit=2)
    synthesize(config, engine=make_engine(smol_tokenizer, gemma_tokenizer))
    # Lines another config wrote for prompts not done yet: q2 must start afresh, not mix them in.
    donor = tmp_path / "donor"
    donor.mkdir()
    journal = Journal(donor, "another-fingerprint")
    engine = make_engine(smol_tokenizer, gemma_tokenizer, seed=11)
    engine.observer = journal
    asyncio.run(engine.run("q2", [{"role": "user", "content": "What is 2 plus 5?"}]))
    journal.close()
    shutil.copy(donor / JOURNAL_FILE, out / JOURNAL_FILE)
    report = synthesize(dataclasses.replace(config, limit=3), engine=make_engine(smol_tokenizer, gemma_tokenizer))
    assert report.written == 1 and report.resumed == 0
    assert without_run_marks(records(out)["q2"]) == without_run_marks(expected["q2"])
    assert "resumed" not in records(out)["q2"] and not journal_lines(out)


def test_a_failed_sample_is_retried_afresh(tmp_path, smol_tokenizer, gemma_tokenizer, reference):
    prompts, expected = reference
    out = tmp_path / "run"
    config = SynthesizeConfig(input=str(prompts), output=str(out), progress=False, concurrency=1, seed=3, limit=1)
    engine = make_engine(smol_tokenizer, gemma_tokenizer)
    calls = {"n": 0}
    stream = engine.parties["teacher"].backend.stream

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("server gone")
        return stream(*args, **kwargs)

    engine.parties["teacher"].backend.stream = failing
    assert synthesize(config, engine=engine).failed == 1
    assert not journal_lines(out)  # its turns were dropped
    report = synthesize(config, engine=make_engine(smol_tokenizer, gemma_tokenizer))
    assert report.written == 1 and report.resumed == 0
    assert without_run_marks(records(out)["q0"]) == without_run_marks(expected["q0"])


# ---------------------------------------------------------------------------- kill -9, a real process


def test_kill_9_of_the_cli_then_a_rerun_resumes_mid_trace(tmp_path, smol_tokenizer):
    """`tessy synthesize` against two fake servers is killed with SIGKILL while samples are half
    written; the rerun writes each prompt once, the same records as an uninterrupted run, and
    generates only what the journal did not already hold."""
    script = smol_tokenizer.encode(" Okay, so the answer is 7 because 3 plus 4 makes 7. Wait, let me check: 3 + 4 = 7.",
                                   add_special_tokens=False)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 4)
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=150,
                          latency_s=0.03) as s, \
            FakeOpenAIServer("teacher", script=script[3:], decode=smol_tokenizer.decode, latency_s=0.03) as t:
        def args(output: Path) -> list[str]:
            return [sys.executable, "-m", "tessy.cli.main", "synthesize", "--input", str(prompts), "--output",
                    str(output), "--no-progress", "--student.backend", "openai", "--teacher.backend", "openai",
                    "--student.url", s.url, "--teacher.url", t.url, "--teacher.model", "smollm2-135m-instruct",
                    "--student.k", "6", "--teacher.k", "6", "--no-student.adaptive-k",
                    "--no-teacher.adaptive-k", "--max-tokens", "120", "--concurrency", "4", "--seed", "7"]

        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        whole = subprocess.run(args(tmp_path / "whole"), capture_output=True, text=True, env=env, timeout=300)
        assert whole.returncode == 0, whole.stderr
        out = tmp_path / "run"
        first = subprocess.Popen(args(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if len(journal_lines(out)) >= 30:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = len(records(out)) if (out / "records.jsonl").exists() else 0
        assert done_before < 4, "the run finished before it was killed"
        rerun = subprocess.run(args(out), capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "mid-trace" in rerun.stdout
    expected, got = records(tmp_path / "whole"), records(out)
    assert len((out / "records.jsonl").read_text().splitlines()) == 4 and sorted(got) == sorted(expected)
    for sample_id, record in got.items():
        assert without_run_marks(record) == without_run_marks(expected[sample_id]), sample_id
    assert any("resumed" in record for record in got.values())
