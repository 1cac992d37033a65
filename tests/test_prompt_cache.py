"""Prompt tokens the servers compute (`tessy.backends.openai.cache`) and reading a prompt ahead
(`Engine.warm`), against the fake llama.cpp-shaped server (tests/fake_openai_server.py): a slot
that keeps each sample's last answer costs a later request only its new tokens; one that does not
(llama.cpp with a sliding-window model, simulated by `cache_lag`) is named in the summary; the
teacher reads the prompt while the student writes the first turn, and the records do not change."""

from __future__ import annotations

import asyncio

import pytest

from tessy.backends.openai.cache import new_tokens, recompute_warning
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_backend_openai import SAMPLING, SCRIPT, _comparable, completions, http_config, make, read_jsonl, \
    write_prompts


def test_new_tokens_are_what_the_server_does_not_hold():
    held = (5, [7, 8, 9])  # the last request: 5 context tokens, answered 7 8 9
    prompt = [1, 2, 3, 4, 5]
    assert new_tokens(prompt + [7, 8, 9], *held) == 1  # all held: one token for the logits
    assert new_tokens(prompt + [7, 8, 9, 30, 31], *held) == 2  # the other model's span
    assert new_tokens(prompt + [7, 30, 31, 32], *held) == 3  # cut after the first answered token
    assert new_tokens(prompt[:4], *held) == 1  # cut back into what it holds


@pytest.mark.parametrize("lag", [0, 25])
def test_later_requests_that_recompute_what_the_slot_held_are_counted_and_named(smol_tokenizer, lag):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, owned_by="llamacpp",
                          total_slots=2, cache_style="llama.cpp", cache_lag=lag) as fake:
        backend = make(fake, smol_tokenizer)

        async def run():
            contexts = {seq: list(range(10 + i, 40 + i)) for i, seq in enumerate("ab")}
            for _ in range(5):  # two samples taking turns, each on its own slot
                for seq in contexts:
                    generation = await backend.generate(seq, contexts[seq], 6, SAMPLING)
                    contexts[seq] += list(generation.token_ids) + [3, 4]  # its answer and the other model's span
            await backend.aclose()

        asyncio.run(run())
    stats = backend.stats
    assert stats.follow_ups == 8 and stats.prompt_reported == 10
    counters = {"follow_ups": stats.follow_ups, "follow_up_excess": stats.follow_up_excess}
    if lag:
        assert stats.follow_up_excess == 8 * lag  # each later request computed the lag on top of its 2 new tokens
        warning = recompute_warning("teacher", counters)
        assert warning.startswith("teacher servers computed 25 prompt tokens per later request") and "--swa-full" in warning
    else:
        assert stats.follow_up_excess == 0
        assert recompute_warning("teacher", counters) == ""
    assert recompute_warning("teacher", {"follow_ups": 3, "follow_up_excess": 300}) == ""  # too few to judge


def test_the_summary_prints_the_recompute_warning(capsys):
    from tessy.cli.synthesize import print_report
    from tessy.runner import RunReport

    stats = {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 900, "prompt_processed": 400,
             "prompt_reported": 20, "completions": 20, "follow_ups": 16, "follow_up_excess": 400}
    print_report(RunReport(output="x", kept_tokens=100, server_stats={"teacher": stats}))
    assert "warning: teacher servers computed 25 prompt tokens per later request" in capsys.readouterr().out


def test_the_teacher_reads_the_prompt_while_the_student_writes_and_records_do_not_change(tmp_path, smol_tokenizer):
    from tessy.runner import build_engine, synthesize

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    write_prompts(tmp_path / "prompts.jsonl", 3)
    options = dict(decode=smol_tokenizer.decode, owned_by="llamacpp", total_slots=4, cache_style="llama.cpp")
    runs = {}
    for warm in (False, True):
        with FakeOpenAIServer("student", script=script, stop_id=2, stop_at=90, **options) as s, \
                FakeOpenAIServer("teacher", script=script[3:], **options) as t:
            config = http_config(tmp_path, s.url, t.url, output=str(tmp_path / f"warm-{warm}"))
            engine = build_engine(config)
            engine.warm_prompts = warm
            report = synthesize(config, engine=engine)
            assert report.written == 3 and report.failed == 0
            teacher, student = completions(t)[2:], completions(s)[2:]  # after the start's probes
        records = sorted((_comparable(r) for r in read_jsonl(tmp_path / f"warm-{warm}" / "records.jsonl")),
                         key=lambda r: r["id"])
        runs[warm] = records, teacher, student, report.server_stats["teacher"]
    (cold, cold_teacher, cold_student, cold_stats), (warmed, teacher, student, stats) = runs[False], runs[True]
    assert warmed == cold
    assert len(teacher) == len(cold_teacher) + 3 and len(student) == len(cold_student)
    for slot in {r["body"]["id_slot"] for r in teacher}:
        first, second = [r["body"] for r in teacher if r["body"]["id_slot"] == slot][:2]
        assert first["max_tokens"] == 1 and first["temperature"] == 0.0  # the prompt, read ahead
        assert second["prompt"][: len(first["prompt"])] == first["prompt"]  # the same sample's first turn
    # Read ahead, not twice: the teacher computed as many prompt tokens as without, none again.
    assert stats["prompt_processed"] == cold_stats["prompt_processed"] and stats["follow_up_excess"] == 0
