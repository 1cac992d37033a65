"""Cache-friendly requests and the prompt tokens servers compute (`tessy.backends.openai.cache`),
against the fake llama.cpp- and vLLM-shaped servers (tests/fake_openai_server.py): llama.cpp gets
`cache_prompt` and one slot per sample, vLLM no llama fields; usage is read back and summed into
the summary's line. A slot that keeps each sample's last answer costs a later request only its new
tokens; one that does not (llama.cpp with a sliding-window model, simulated by `cache_lag`) is
named in the summary; the teacher reads the prompt while the student writes the first turn
(`Pair.warm`), and the records do not change."""

from __future__ import annotations

import asyncio

import pytest

from tessy.backends.openai.cache import new_tokens, recompute_warning
from tests.fake_openai_server import FakeOpenAIServer
from tests.http_helpers import SAMPLING, SCRIPT, comparable, completions, generate, http_config, make, \
    read_jsonl, write_prompts


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


def test_a_server_whose_own_counters_show_no_cache_hit_gets_a_warning():
    from tessy.backends.openai.cache import server_cache_warning

    cold = {"server_counted": 1, "server_prompt_tokens": 5000, "server_prompt_cached": 0, "completions": 40}
    warning = server_cache_warning("student", cold)
    assert warning.startswith("student servers found none of 5000 prompt tokens") and "--block-size" in warning
    assert server_cache_warning("student", {**cold, "server_prompt_cached": 32}) == ""  # it hits
    assert server_cache_warning("student", {**cold, "completions": 3}) == ""  # too few to judge
    assert server_cache_warning("student", {**cold, "server_counted": 0}) == ""  # no counters read


def test_the_summary_prints_the_recompute_warning(capsys):
    from tessy.cli.synthesize import print_report
    from tessy.runner import RunReport

    stats = {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 900, "prompt_processed": 400,
             "prompt_reported": 20, "completions": 20, "follow_ups": 16, "follow_up_excess": 400}
    print_report(RunReport(output="x", kept_tokens=100, server_stats={"teacher": stats}))
    assert "warning: teacher servers computed 25 prompt tokens per later request" in capsys.readouterr().out


@pytest.mark.slow
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
            config.speed.read_ahead = warm
            engine = build_engine(config)
            report = synthesize(config, engine=engine)
            assert report.written == 3 and report.failed == 0
            teacher, student = completions(t)[2:], completions(s)[2:]  # after the start's probes
        records = sorted((comparable(r) for r in read_jsonl(tmp_path / f"warm-{warm}" / "records.jsonl")),
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


# ---- cache-friendly requests: llama.cpp's slots, prompt usage ------------------------------------

TEXT_BODY = {"model": "smol", "prompt": "Hello there", "max_tokens": 6, "temperature": 0.5, "top_p": 0.9,
             "seed": 11, "top_k": 0, "repeat_penalty": 1.0, "stop": ["<|im_end|>"]}


def test_llama_server_gets_cache_prompt_and_one_slot_per_sequence(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="llamacpp", total_slots=3) as fake:
        backend = make(fake, smol_tokenizer)
        assert (backend.transport, backend.server, backend.slots) == ("text", "llama.cpp", 3)
        context = smol_tokenizer.encode("Hello there", add_special_tokens=False)
        slots = []
        for seq in ("a", "b", "a", "c", "d", "b"):
            generate(backend, seq_id=seq, context=context, n=6)
            slots.append(completions(fake)[-1]["body"]["id_slot"])
        assert slots == [0, 1, 0, 2, 0, 1]  # each sequence keeps its slot; new ones take the least used
        assert completions(fake)[-1]["body"] == {**TEXT_BODY, "cache_prompt": True, "id_slot": 1}
        backend.release("b")
        generate(backend, seq_id="e", context=context, n=6)
        assert completions(fake)[-1]["body"]["id_slot"] == 1  # "b"'s slot was freed


def test_llama_cpp_python_gets_cache_prompt_and_id_slot_only_when_configured(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    context = smol_tokenizer.encode("Hello there", add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="me") as fake:
        backend = make(fake, smol_tokenizer)
        assert (backend.server, backend.slots) == ("llama-cpp-python", 0)
        generate(backend, seq_id="a", context=context, n=6)
        assert completions(fake)[-1]["body"] == {**TEXT_BODY, "cache_prompt": True}
        configured = make(fake, smol_tokenizer, slots=2)
        generate(configured, seq_id="a", context=context, n=6)
        generate(configured, seq_id="b", context=context, n=6)
        assert [r["body"].get("id_slot") for r in completions(fake)[-2:]] == [0, 1]
    # Recognised by its validation error alone, too (a card that does not say who serves it).
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="someone") as fake:
        assert make(fake, smol_tokenizer).server == "llama-cpp-python"


def test_vllm_gets_no_llama_fields_and_no_props_request(server, smol_tokenizer):
    backend = make(server, smol_tokenizer)
    assert backend.server == "vllm"
    generate(backend, context=[5, 6, 7, 8], n=4)
    body = completions(server)[-1]["body"]
    assert "cache_prompt" not in body and "id_slot" not in body
    # The card, and vLLM's own counters (read at the start; this server has none to give).
    assert [r["path"] for r in server.requests if r["method"] == "GET"] == ["/v1/models", "/metrics"]


@pytest.mark.parametrize("style", ["vllm", "llama.cpp", ""])
def test_prompt_tokens_processed_are_read_from_the_servers_usage(smol_tokenizer, style):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, cache_style=style) as fake:
        backend = make(fake, smol_tokenizer)
        base = (backend.stats.prompt_tokens, backend.stats.prompt_processed)
        context = list(range(10, 30))
        first = generate(backend, seq_id="a", context=context, n=5)
        # The slot holds the first prompt and its answer: all 23 tokens of the second are cached.
        generate(backend, seq_id="a", context=context + first.token_ids[:3], n=5)
        sent = backend.stats.prompt_tokens - base[0]
        processed = backend.stats.prompt_processed - base[1]
        assert sent == 43
        if style:
            assert processed == 20 and backend.stats.prompt_reported == 2
        else:
            assert processed == 43 and backend.stats.prompt_reported == 0


def test_summary_shows_prompt_tokens_processed_per_kept_token():
    from tessy.cli.synthesize import prompt_tokens_line
    from tessy.runner import RunReport

    report = RunReport(output="x", kept_tokens=100, server_stats={
        "student": {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 500, "prompt_processed": 120,
                    "prompt_reported": 10, "completions": 10},
        "teacher": {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 300, "prompt_processed": 300,
                    "prompt_reported": 0, "completions": 8}})
    assert prompt_tokens_line(report) == (
        "prompt tokens processed per kept token: 4.20 (student 1.20, teacher 3.00 (the server does not report "
        "cached tokens (vLLM: --enable-prompt-tokens-details): all counted as computed); 8.00 sent)")
    # Streams stopped at the cut carry no cache figure: said so, never as "no cache hits".
    report.server_stats["student"].update(prompt_reported=4, prompt_unknown=6)
    line = prompt_tokens_line(report)
    assert "student 1.20 (cache use unknown for 6/10 requests: streams stopped at the cut" in line, line
    assert prompt_tokens_line(RunReport(output="x")) == ""
