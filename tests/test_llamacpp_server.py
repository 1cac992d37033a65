"""TESSY over HTTP against REAL servers: llama.cpp's OpenAI-compatible server (llama-cpp-python)
serving the two demo GGUF models on loopback, one server per role, started and stopped here.

llama.cpp's completions endpoint takes text prompts only, so the backend must detect the text
transport on its own; the records must have the same structure as an in-process run's.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request

import pytest

from bench.bench_servers import free_port, wait_ready

pytestmark = [
    pytest.mark.real_models,
    pytest.mark.server,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python[server] is not installed (the Makefile's install step builds it)",
    ),
]

PROMPTS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A train travels 60 km in one hour. How far does it travel in 3 hours?",
]


@pytest.fixture(scope="module")
def llama_servers(tmp_path_factory):
    """{role: url}: one llama.cpp server per demo model, killed at teardown."""
    from tessy.models import DEMO_MODELS, STUDENT_DEMO, TEACHER_DEMO

    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python was installed without [server]")
    logs = tmp_path_factory.mktemp("llama-logs")
    procs, urls = [], {}
    try:
        for role, alias in (("student", STUDENT_DEMO), ("teacher", TEACHER_DEMO)):
            port = free_port()
            log_path = logs / f"{role}.log"
            cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(DEMO_MODELS[alias].gguf_path()),
                   "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                   "--n_threads", "2", "--verbose", "false"]
            with open(log_path, "w") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            urls[role] = f"http://127.0.0.1:{port}"
            wait_ready(urls[role], procs[-1], log_path, timeout_s=120.0)
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


def _structure(value):
    """The shape of a record: keys and value types, recursively (one list element stands for all)."""
    if isinstance(value, dict):
        return {key: _structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_structure(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _config(tmp_path, name, backend, urls=None):
    from tessy.config import ModelConfig, SynthesizeConfig
    from tessy.models import STUDENT_DEMO, TEACHER_DEMO

    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    roles = {}
    for role, alias in (("student", STUDENT_DEMO), ("teacher", TEACHER_DEMO)):
        roles[role] = ModelConfig(model=alias, backend=backend, url=(urls or {}).get(role, ""), temperature=0.0,
                                  max_context=2048)
    return SynthesizeConfig(input=str(prompts), output=str(tmp_path / name), max_tokens=48, max_answer_tokens=16,
                            concurrency=2, progress=False, **roles)


def test_server_refuses_token_id_prompts(llama_servers):
    """The premise of the text transport: llama.cpp answers a list of ids with a validation error."""
    body = json.dumps({"model": "smollm2-135m-instruct", "prompt": [1, 2, 3], "max_tokens": 1}).encode()
    request = urllib.request.Request(llama_servers["student"] + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    # A validation error (llama-cpp-python reports it with status 500 under recent FastAPI).
    assert error.value.code in (400, 422, 500)
    assert "valid string" in error.value.read().decode()


def test_tessy_over_llamacpp_http_matches_in_process_records(llama_servers, tmp_path):
    from tessy.records import read_records, validate_record
    from tessy.runner import synthesize

    report = synthesize(_config(tmp_path, "http", "openai", llama_servers))
    assert report.written == 2 and report.failed == 0, report
    http_records = list(read_records(tmp_path / "http" / "records.jsonl"))
    for record in http_records:
        validate_record(record)
        assert {role: m["transport"] for role, m in record["models"].items()} == {"student": "text", "teacher": "text"}
        assert record["spans"], record
        assert record["messages"][-1]["content"] == "".join(span["text"] for span in record["spans"])
    roles = {span["role"] for record in http_records for span in record["spans"]}
    assert "student" in roles

    report = synthesize(_config(tmp_path, "inproc", "hf"))
    assert report.written == 2
    local_records = list(read_records(tmp_path / "inproc" / "records.jsonl"))
    assert local_records[0]["models"]["student"]["transport"] == "in_process"
    for http_record, local_record in zip(http_records, local_records):
        shape_http, shape_local = _structure(http_record), _structure(local_record)
        # Same keys and types everywhere; thinking share may be null on one side only if no span.
        assert shape_http.keys() == shape_local.keys()
        for key in shape_http:
            if key == "spans" and (not shape_http[key] or not shape_local[key]):
                continue
            assert shape_http[key] == shape_local[key], key


# ---- multi-byte text over the text transport -------------------------------------------------

#: SmolLM2 answers this (greedy) with emoji and fullwidth characters, each two or more tokens.
MULTIBYTE_PROMPT = "Emoji list: 🙂 😀 😃 😄 😁 😆"


def _complete_raw(url: str, prompt: str, max_tokens: int) -> dict:
    from tessy.models import STUDENT_DEMO

    body = json.dumps({"model": STUDENT_DEMO, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "top_k": 0, "repeat_penalty": 1.0}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def test_server_finishes_a_character_past_max_tokens_and_never_writes_a_replacement(llama_servers):
    """The premise of `parse.ids_from_text`: when max_tokens ends inside a character,
    llama-cpp-python (0.3.x) keeps generating until the character is whole (`usage` then counts
    more tokens than asked) or drops the partial bytes (`errors="ignore"`); it never writes U+FFFD.
    So the text can hold more tokens than max_tokens, and the backend must clip and cut back."""
    answers = [_complete_raw(llama_servers["student"], MULTIBYTE_PROMPT, n) for n in range(1, 13)]
    texts = [a["choices"][0]["text"] for a in answers]
    assert not any("\ufffd" in text for text in texts)
    assert any(ord(c) > 0xFFFF for c in "".join(texts))  # the model did write 4-byte characters
    overrun = [n for n, a in enumerate(answers, start=1) if a["usage"]["completion_tokens"] > n]
    assert overrun, [a["usage"] for a in answers]


def test_text_transport_returns_whole_characters_within_the_budget(llama_servers):
    import asyncio

    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend
    from tessy.models import STUDENT_DEMO, load_tokenizer

    tokenizer = load_tokenizer(STUDENT_DEMO)
    backend = OpenAIHTTPBackend(STUDENT_DEMO, llama_servers["student"], role="student", tokenizer=tokenizer,
                                max_context=2048)
    assert backend.transport == "text"
    greedy = SamplingParams(temperature=0.0, top_k=0)
    prompt = tokenizer.encode(MULTIBYTE_PROMPT, add_special_tokens=False)

    async def run():
        full = await backend.generate("full", prompt, 40, greedy)
        single = [await backend.generate(f"n{n}", prompt, n, greedy) for n in range(1, 13)]
        context, steps = list(prompt), []  # the engine's way: 3 tokens a step, each continuing the last
        for step in range(10):
            generation = await backend.generate("steps", context, 3, greedy)
            context += generation.token_ids
            steps.append(generation)
        return full, single, steps

    full, single, steps = asyncio.run(run())
    assert "\ufffd" not in full.text and any(ord(c) > 0xFFFF for c in full.text)
    for n, generation in enumerate(single, start=1):
        assert "\ufffd" not in generation.text, (n, generation.text)
        assert len(generation.token_ids) <= n  # the budget holds though the server wrote more
        assert generation.text == tokenizer.decode(generation.token_ids)
        assert full.text.startswith(generation.text), (n, generation.text)  # cut at a character boundary
    written = "".join(g.text for g in steps)
    assert "\ufffd" not in written and all(len(g.token_ids) <= 3 for g in steps)
    assert any(ord(c) > 0xFFFF for c in written)
