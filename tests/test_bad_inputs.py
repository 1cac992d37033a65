"""The table of bad inputs and bad settings, driven through the real CLI (`tessy.cli.main.main`).

Each case asserts the message, the exit code, and what happened to the other prompts: a bad
setting or an unusable file writes nothing (exit 2, one line naming the field or file); a single
bad row is a reject naming its line while every other prompt gets its record (exit 0); prompts
left failed or out of attempts give exit 3 and say where to look. No traceback ever.

The models are scripted (`tessy.backends.fake.ScriptedBackend` with the real SmolLM2 tokenizer),
plugged in through the documented hook `tessy.cli.synthesize.ENGINE_FACTORY`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import tessy.cli.synthesize as synthesize_cli
from tessy.backends.fake import ScriptedBackend
from tessy.cli.main import EXIT_ERROR, EXIT_OK, EXIT_UNFINISHED, main
from tessy.engine import Party
from tests.test_engine import KeywordPredictor, PlainTestFormat

GOOD = [{"id": "a", "prompt": "What is 3+4?"}, {"id": "b", "prompt": "What is 1+1?"},
        {"id": "c", "prompt": "What is 2+2?"}]


class FailingOn(ScriptedBackend):
    """A scripted model that raises on every prompt containing FAIL (a sample that always fails)."""

    async def generate(self, seq_id, context_ids, *args, **kwargs):
        if "FAIL" in self.tokenizer.decode(context_ids):
            raise RuntimeError("scripted server fault")
        return await super().generate(seq_id, context_ids, *args, **kwargs)


@pytest.fixture(autouse=True)
def scripted_models(smol_tokenizer, monkeypatch):
    from tessy.runner import build_engine

    def factory(config):
        fmt = PlainTestFormat()
        student = Party("student", ScriptedBackend(smol_tokenizer, "Okay, so we add. Wait, so it is.", "student",
                                                   max_context=4000), fmt, KeywordPredictor(), k=config.student.k)
        teacher = Party("teacher", FailingOn(smol_tokenizer, "Three plus four is seven. So done.", "teacher",
                                             max_context=4000), fmt, KeywordPredictor(), k=config.teacher.k)
        return build_engine(config, {"student": student, "teacher": teacher})

    monkeypatch.setattr(synthesize_cli, "ENGINE_FACTORY", factory)


def jsonl(rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def parquet(columns: dict) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)
    return write


def hf_dataset(splits: dict[str, list[dict]] | None = None, rows: list[dict] | None = None):
    def write(path: Path) -> None:
        import datasets

        if rows is not None:
            datasets.Dataset.from_list(rows).save_to_disk(str(path))
        else:
            datasets.DatasetDict({name: datasets.Dataset.from_list(r) for name, r in splits.items()}
                                 ).save_to_disk(str(path))
    return write


@dataclass
class Case:
    name: str
    args: list[str] = field(default_factory=list)       # flags besides --input/--output
    files: dict = field(default_factory=dict)           # name -> text, bytes or writer(path)
    input: str = "prompts.jsonl"                        # the --input (a name in `files`)
    rc: int = EXIT_OK
    message: str = ""                                   # regex searched in stdout, stderr, rejects
    written: set[str] | None = None                     # ids in records.jsonl (None: no output folder)
    rejects: set[int] = field(default_factory=set)      # reject lines
    output: str = "run"                                 # the --output (relative to tmp_path)


def settings(name: str, args: list[str], message: str, yaml: str | None = None) -> Case:
    files = {"prompts.jsonl": jsonl(GOOD)}
    if yaml is not None:
        files["run.yaml"] = yaml
        args = ["--config", "run.yaml", *args]
    return Case(name, args, files, rc=EXIT_ERROR, message=message)


def one_bad_row(name: str, row, message: str, line: int = 2, args=(), written=("a", "b", "c")) -> Case:
    rows = GOOD[:1] + [row] + GOOD[1:]
    return Case(name, list(args), {"prompts.jsonl": jsonl(rows)}, message=message, written=set(written),
                rejects={line})


def bad_file(name: str, files: dict, input: str, message: str, args=()) -> Case:
    return Case(name, list(args), files, input=input, rc=EXIT_ERROR, message=message)


CASES = [
    # --- bad settings: exit 2 before anything is written, the field and its range named
    settings("concurrency-0", ["--concurrency", "0"], r"--concurrency: expected an integer at least 1, got 0"),
    settings("concurrency-negative", ["--concurrency", "-4"], r"--concurrency: expected an integer at least 1, got -4"),
    settings("k-0", ["--student.k", "0"], r"--student\.k: expected an integer at least 1, got 0"),
    settings("max-tokens-0", ["--max-tokens", "0"], r"--max-tokens: expected an integer at least 1, got 0"),
    settings("max-tokens-negative", ["--max-tokens", "-5"], r"--max-tokens: expected an integer at least 1"),
    settings("max-answer-tokens-0", ["--max-answer-tokens", "0"], r"--max-answer-tokens: expected an integer at least 1"),
    settings("max-spans-0", ["--max-spans", "0"], r"--max-spans: expected an integer at least 1, got 0"),
    settings("temperature-negative", ["--teacher.temperature", "-1"],
             r"--teacher\.temperature: expected a number at least 0, got -1"),
    settings("top-p-2", ["--student.top-p", "2"], r"--student\.top-p: expected a number greater than 0 and at most 1"),
    settings("max-retries-negative", ["--teacher.max-retries", "-1"], r"--teacher\.max-retries: expected an integer at least 0"),
    settings("max-attempts-0", ["--max-attempts", "0"], r"--max-attempts: expected an integer at least 1, got 0"),
    settings("limit-negative", ["--limit", "-1"], r"--limit: expected an integer at least 0, got -1"),
    settings("timeout-0", ["--teacher.timeout-s", "0"], r"--teacher\.timeout-s: expected a number greater than 0, got 0"),
    settings("max-prompt-chars-0", ["--max-prompt-chars", "0"], r"--max-prompt-chars: expected an integer at least 1"),
    settings("k-not-a-number-flag", ["--student.k", "2.7"], r"argument --student\.k: invalid int value: '2\.7'"),
    settings("yaml-k-null", [], r"run\.yaml: student\.k: expected an integer at least 1, got null",
             yaml="student:\n  k: null\n"),
    settings("yaml-max-tokens-null", [], r"run\.yaml: max_tokens: expected an integer at least 1, got null",
             yaml="max_tokens: null\n"),
    settings("yaml-headers-string", [], r"run\.yaml: teacher\.headers: expected a mapping .*got 'X: y'",
             yaml='teacher:\n  headers: "X: y"\n'),
    settings("yaml-k-float", [], r"run\.yaml: teacher\.k: expected an integer at least 1, got 2\.7",
             yaml="teacher:\n  k: 2.7\n"),
    settings("yaml-temperature-bool", [], r"run\.yaml: student\.temperature: expected a number at least 0, got true",
             yaml="student:\n  temperature: true\n"),
    settings("yaml-unknown-key", [], r"run\.yaml\.teacher: unknown key 'temprature'", yaml="teacher:\n  temprature: 1\n"),
    settings("unknown-method", ["--method", "teacher-oops"],
             r"--method: expected one of: tessy, teacher-only, .*teacher-reference; got 'teacher-oops'"),
    settings("unknown-backend", ["--teacher.backend", "vllm"], r"--teacher\.backend: expected one of: hf, openai; got 'vllm'"),
    settings("unknown-format", ["--student.format", "chatml"],
             r"--student\.format: expected one of: auto, qwen3, deepseek-r1, harmony, plain; got 'chatml'"),
    settings("unknown-prompt-mode", ["--teacher.prompt-mode", "tokens"],
             r"--teacher\.prompt-mode: expected one of: auto, token_ids, text; got 'tokens'"),
    settings("openai-without-url", ["--teacher.backend", "openai"], r"teacher\.url: the openai backend needs"),
    settings("two-bad-settings", ["--concurrency", "0", "--student.k", "0"], r"2 bad settings:\n  .*concurrency"),

    # --- one bad row: a reject naming its line; every other prompt is written, exit 0
    one_bad_row("lone-surrogate-no-id", '{"prompt": "bad \\udfff text"}',
                r"line 2: field 'prompt' is not valid Unicode text: lone surrogate '\\udfff' at character 5"),
    one_bad_row("lone-surrogate-with-id", '{"id": "s", "prompt": "bad \\udfff"}', r"line 2: field 'prompt' is not valid Unicode"),
    one_bad_row("lone-surrogate-in-messages", '{"messages": [{"role": "user", "content": "\\ud800"}]}',
                r"line 2: field 'messages'\[0\]\.content is not valid Unicode"),
    one_bad_row("null-prompt", {"id": "n", "prompt": None}, r"line 2: field 'prompt' is null"),
    one_bad_row("missing-prompt-names-fields", {"id": "m", "question": "hi"},
                r"line 2: missing field 'prompt' \(or 'messages'\); the row has: id, question"),
    one_bad_row("malformed-json", '{"id": "x", "prompt": "unterminated',
                r"line 2: malformed JSON \(Unterminated string starting at column 23\)"),
    one_bad_row("huge-prompt", {"id": "big", "prompt": "x" * 300_000},
                r"line 2: prompt is 300,000 characters, more than max_prompt_chars \(200,000\)"),
    pytest.param(one_bad_row("max-prompt-chars-setting", {"id": "long", "prompt": "y" * 50},
                             r"line 2: prompt is 50 characters", args=["--max-prompt-chars", "40"])),
    one_bad_row("duplicate-id", {"id": "a", "prompt": "again"}, r"line 2: duplicate id 'a'.*first seen on line 1"),
    one_bad_row("ends-with-assistant", {"id": "r", "messages": [{"role": "user", "content": "q"},
                                                               {"role": "assistant", "content": "a"}]},
                r"line 2: field 'messages' ends with a turn by 'assistant'"),
    one_bad_row("not-an-object", "[1, 2]", r"line 2: expected a JSON object, got list"),
    Case("bom-keeps-first-prompt", files={"prompts.jsonl": b"\xef\xbb\xbf" + jsonl(GOOD).encode()},
         written={"a", "b", "c"}),
    Case("pretty-json-array", files={"prompts.json": json.dumps(GOOD, indent=2)}, input="prompts.json",
         written={"a", "b", "c"}),
    Case("bom-pretty-json-array", files={"prompts.json": b"\xef\xbb\xbf" + json.dumps(GOOD, indent=2).encode()},
         input="prompts.json", written={"a", "b", "c"}),
    pytest.param(Case("multi-split-dataset-with-split", ["--split", "test"],
                      {"ds": hf_dataset({"test": GOOD, "validation": GOOD[:1]})}, input="ds", written={"a", "b", "c"})),

    # --- an unusable source: exit 2, one line naming the file (and line), nothing written
    bad_file("bad-json-array", {"p.json": '[\n  {"prompt": "a"}\n  {"prompt": "b"}\n]\n'}, "p.json",
             r"p\.json: not valid JSON at line 3, column 3: Expecting ',' delimiter"),
    bad_file("corrupt-parquet", {"p.parquet": b"PAR1 this is not parquet at all"}, "p.parquet",
             r"p\.parquet: not a readable Parquet file"),
    bad_file("parquet-wrong-column", {"p.parquet": parquet({"question": ["a", "b"], "answer": ["1", "2"]})}, "p.parquet",
             r"p\.parquet: no column has the prompt field 'prompt' \(or 'messages'\); fields found: answer, question"),
    bad_file("jsonl-wrong-field", {"p.jsonl": jsonl([{"question": "a"}, {"question": "b"}])}, "p.jsonl",
             r"p\.jsonl: no row has the prompt field 'prompt' .*fields found: question; name the right one with --prompt-field"),
    bad_file("fake-dataset-folder", {"ds": lambda p: (p.mkdir(), (p / "state.json").write_text("{}"))}, "ds",
             r"ds: looks like a folder saved with datasets\.save_to_disk but cannot be loaded"),
    bad_file("multi-split-dataset", {"ds": hf_dataset({"test": GOOD, "validation": GOOD})}, "ds",
             r"ds: holds several splits \(test, validation\); choose one with --split"),
    bad_file("unknown-split", {"ds": hf_dataset({"test": GOOD, "validation": GOOD})}, "ds",
             r"ds: has no split 'dev'; it holds test, validation", args=["--split", "dev"]),
    bad_file("truncated-gz", {"p.jsonl.gz": lambda p: p.write_bytes(gzip.compress(jsonl(GOOD * 50).encode())[:-30])},
             "p.jsonl.gz", r"p\.jsonl\.gz: cannot read after line \d+: Compressed file ended"),
    bad_file("not-gzip", {"p.jsonl.gz": jsonl(GOOD)}, "p.jsonl.gz", r"p\.jsonl\.gz: cannot read at the start: Not a gzipped file"),
    bad_file("missing-input", {}, "nope.jsonl", r"prompt file not found: .*nope\.jsonl"),
    bad_file("empty-input", {"p.jsonl": "\n\n"}, "p.jsonl", r"p\.jsonl: holds no prompts"),
    bad_file("unknown-extension", {"p.csv": "prompt\nhi\n"}, "p.csv", r"p\.csv: cannot read prompts: unknown file type '\.csv'"),
    bad_file("folder-without-prompts", {"d": lambda p: p.mkdir()}, "d", r"d: cannot read prompts from this folder"),
    Case("all-rows-rejected", files={"prompts.jsonl": jsonl([{"prompt": ""}, {"prompt": None}])}, rc=EXIT_ERROR,
         message=r"all 2 prompts were rejected, nothing to do \(first: line 1: field 'prompt' is empty\)",
         written=set(), rejects={1, 2}),

    # --- the output folder cannot be written: exit 2, one line naming the path
    Case("output-under-a-file", files={"prompts.jsonl": jsonl(GOOD), "afile": "x"}, output="afile/run",
         rc=EXIT_ERROR, message=r"error: Not a directory: .*afile/run \(a part of this path is a file, not a folder\)"),

    # --- prompts left unfinished: exit 3 with the count and where to look; the others are written
    Case("failed-sample", files={"prompts.jsonl": jsonl(GOOD + [{"id": "f", "prompt": "FAIL please"}])},
         rc=EXIT_UNFINISHED, message=r"1 prompts unfinished \(1 failed this run\): see .*failures\.jsonl",
         written={"a", "b", "c"}),
]


def _materialize(tmp_path: Path, case: Case) -> None:
    for name, content in case.files.items():
        path = tmp_path / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _run(tmp_path: Path, case: Case, capsys) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(tmp_path)  # relative paths, so that messages are short and checkable
    try:
        rc = main(["synthesize", "--input", case.input, "--output", case.output, "--no-progress", *case.args])
    finally:
        os.chdir(cwd)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.parametrize("case", CASES, ids=lambda case: getattr(case, "name", None))
def test_bad_input_or_setting(case: Case, tmp_path, capsys):
    _materialize(tmp_path, case)
    rc, text = _run(tmp_path, case, capsys)
    assert rc == case.rc, text
    assert "Traceback" not in text
    out = tmp_path / case.output
    reasons = "\n".join(r["reason"] for r in read(out / "rejects.jsonl")) if out.is_dir() else ""
    if case.message:  # in the CLI's output, or in the reason of a reject
        assert re.search(case.message, text + reasons), text + reasons
    if case.rc == EXIT_ERROR and "bad settings:" not in text:
        assert len([line for line in text.splitlines() if "error:" in line]) == 1, text  # one line
    if case.written is None:
        assert not (out / "records.jsonl").exists(), "nothing may be written on an error at the door"
        if case.rc == EXIT_ERROR and not out.is_file():
            assert not out.exists() or not any(out.iterdir()), text
    else:
        assert {r["id"] for r in read(out / "records.jsonl")} == case.written, text
        assert {r["line"] for r in read(out / "rejects.jsonl")} == case.rejects, text


def test_out_of_attempts_is_exit_3_and_raising_attempts_retries(tmp_path, capsys):
    (tmp_path / "prompts.jsonl").write_text(jsonl(GOOD + [{"id": "f", "prompt": "FAIL again"}]))
    case = Case("attempts", ["--max-attempts", "1"])
    rc, text = _run(tmp_path, case, capsys)
    assert rc == EXIT_UNFINISHED and "1 failed this run" in text
    rc, text = _run(tmp_path, case, capsys)  # a rerun: the failed prompt is out of attempts
    assert rc == EXIT_UNFINISHED, text
    assert re.search(r"1 prompts unfinished \(1 out of attempts \(max_attempts 1; raise --max-attempts", text), text
    assert "skipped 3 prompts already done" in text
    assert sorted(r["id"] for r in read(tmp_path / "run" / "records.jsonl")) == ["a", "b", "c"]


def test_complete_rerun_is_exit_0(tmp_path, capsys):
    (tmp_path / "prompts.jsonl").write_text(jsonl(GOOD + [{"id": "e", "prompt": ""}]))
    case = Case("rerun")
    assert _run(tmp_path, case, capsys)[0] == EXIT_OK
    rc, text = _run(tmp_path, case, capsys)
    assert rc == EXIT_OK and "skipped 3 prompts already done" in text


@pytest.mark.skipif(not Path("/sys").is_dir() or os.name != "posix", reason="needs an unwritable /sys")
def test_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "prompts.jsonl").write_text(jsonl(GOOD))
    rc, text = _run(tmp_path, Case("ro", output="/sys/tessy-test-run"), capsys)
    assert rc == EXIT_ERROR and "Traceback" not in text
    assert re.search(r"error: .*: /sys/tessy-test-run", text), text


def test_disk_full_names_the_output_folder(tmp_path, capsys, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    (tmp_path / "prompts.jsonl").write_text(jsonl(GOOD))
    rc, text = _run(tmp_path, Case("full"), capsys)
    assert rc == EXIT_ERROR and "Traceback" not in text
    assert re.search(r"error: No space left on device: run \(free some space", text), text


def test_synthesize_help_documents_exit_codes_and_bounds(capsys):
    assert main(["synthesize", "--help"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"exit codes:\n\s+0\s+done", text)
    assert re.search(r"\s3\s+finished with prompts left over", text)
    text = " ".join(text.split())  # argparse wraps lines
    assert "Samples in flight at once. (default: 8; at least 1)" in text
    assert "Nucleus sampling threshold. (default: 0.95; greater than 0 and at most 1)" in text
    assert "one of: tessy, teacher-only" in text


# --- tessy export: bad layout, reasoning-field and token-limit settings ------------------------------

EXPORT_CASES = [
    ("max-tokens-zero", ["--max-tokens", "0"], "expected an integer at least 1"),
    ("max-tokens-no-tokenizer", ["--max-tokens", "100", "--tokenizer", "{tmp}/no-tokenizer"],
     "could not load the student's tokenizer"),
    ("sharegpt-thinking-field", ["--to", "sharegpt", "--reasoning-field", "thinking"],
     "the sharegpt export writes the response as text"),
    ("prompt-completion-with-field", ["--layout", "prompt-completion", "--reasoning-field", "thinking"],
     "applies to the messages layout"),
    ("unknown-layout", ["--layout", "conversation"], "invalid choice: 'conversation'"),
    ("unknown-reasoning-field", ["--reasoning-field", "reasoning"], "invalid choice: 'reasoning'"),
    ("mixed-student-formats", ["{tmp}/run2"], "different chat formats (harmony, qwen3): export them separately"),
]


@pytest.mark.parametrize("name,args,message", EXPORT_CASES, ids=[case[0] for case in EXPORT_CASES])
def test_bad_export_setting(name, args, message, tmp_path, capsys):
    from tests.test_export import make_record, write_run

    write_run(tmp_path / "run", [make_record("a", fmt="qwen3"), make_record("b", fmt="qwen3")])
    write_run(tmp_path / "run2", [make_record("c", fmt="harmony")])
    argv = ["export", str(tmp_path / "run"), *(a.format(tmp=tmp_path) for a in args), "-o", str(tmp_path / "out")]
    assert main(argv) == EXIT_ERROR
    text = capsys.readouterr().err
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()
