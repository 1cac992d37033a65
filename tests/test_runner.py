"""The runner with scripted models: records, failures, rejects and resume, exactly once."""

from __future__ import annotations

import json

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.config import SynthesizeConfig
from tessy.engine import Party
from tessy.runner import build_engine, synthesize
from tests.test_engine import KeywordPredictor, PlainTestFormat


def scripted_engine(smol, gemma, fail_on_call=None, config=None):
    fmt = PlainTestFormat()
    student = Party("student", ScriptedBackend(smol, "Okay, so we add. Wait, so it is.", "student", max_context=200), fmt, KeywordPredictor(), k=4)
    teacher = Party("teacher", ScriptedBackend(gemma, "Three plus four is seven. So done.", "teacher",
                                               fail_on_call=fail_on_call, max_context=200), fmt, KeywordPredictor(), k=4)
    return build_engine(config or SynthesizeConfig(), {"student": student, "teacher": teacher})


def write_prompts(path, rows):
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_records_failures_rejects_and_resume(tmp_path, smol_tokenizer, gemma_tokenizer):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [
        {"id": "a", "prompt": "What is 3+4?"},
        "not json",
        {"id": "b", "prompt": "What is 1+1?"},
        {"id": "long", "prompt": "word " * 400},  # longer than the scripted 200-token context
        {"id": "c", "prompt": ""},
        {"id": "d", "prompt": "What is 2+2?"},
    ])
    out = tmp_path / "run"
    config = SynthesizeConfig(input=str(prompts), output=str(out), progress=False, concurrency=2)
    # The teacher fails on its 2nd call: exactly one sample fails, the others finish.
    engine = scripted_engine(smol_tokenizer, gemma_tokenizer, lambda call: RuntimeError("boom") if call == 2 else None)
    report = synthesize(config, engine=engine)
    assert report.written == 2 and report.failed == 1 and report.rejected == 3
    failures = read(out / "failures.jsonl")
    assert failures[0]["reason"] == "RuntimeError: boom" and failures[0]["attempt"] == 1
    rejects = {r["line"]: r["reason"] for r in read(out / "rejects.jsonl")}
    assert set(rejects) == {2, 4, 5}
    assert "context" in rejects[4] and "line 4" in rejects[4]

    # Rerun: the failed sample is retried, finished ones are skipped, nothing is duplicated.
    report = synthesize(config, engine=scripted_engine(smol_tokenizer, gemma_tokenizer))
    assert report.written == 1 and report.skipped_done == 2 and report.failed == 0
    ids = [r["id"] for r in read(out / "records.jsonl")]
    assert sorted(ids) == ["a", "b", "d"]
    assert len(read(out / "rejects.jsonl")) == 3  # the same rejects are not logged twice

    record = read(out / "records.jsonl")[0]
    assert record["method"] == "tessy" and record["messages"][-1]["role"] == "assistant"
    assert {span["role"] for span in record["spans"]} <= {"student", "teacher"}
    totals = record["totals"]
    assert totals["tokens_student"] == sum(span["tokens_student"] for span in record["spans"])


def test_failing_sample_stops_after_max_attempts(tmp_path, smol_tokenizer, gemma_tokenizer):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "x", "prompt": "What is 3+4?"}])
    config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "run"), progress=False, max_attempts=2)
    always = lambda call: RuntimeError("down")  # noqa: E731
    for _ in range(2):
        assert synthesize(config, engine=scripted_engine(smol_tokenizer, gemma_tokenizer, always)).failed == 1
    report = synthesize(config, engine=scripted_engine(smol_tokenizer, gemma_tokenizer, always))
    assert report.failed == 0 and report.skipped_failed == 1  # bounded: no endless retry


def test_single_model_methods_write_same_schema(tmp_path, smol_tokenizer, gemma_tokenizer):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "x", "prompt": "What is 3+4?"}])
    for method in ("teacher-only", "student-only"):
        config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / method), progress=False, method=method)
        assert synthesize(config, engine=scripted_engine(smol_tokenizer, gemma_tokenizer, config=config)).written == 1
        record = read(tmp_path / method / "records.jsonl")[0]
        role = method.split("-")[0]
        assert record["method"] == method
        assert [span["role"] for span in record["spans"]] == [role]
        assert record["totals"]["teacher_share"] == (1.0 if role == "teacher" else 0.0)


def test_view_command_writes_page_beside_records(tmp_path, smol_tokenizer, gemma_tokenizer):
    from tessy.cli.main import main

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "<b>x</b>", "prompt": "What is 3+4?"}])
    out = tmp_path / "run"
    config = SynthesizeConfig(input=str(prompts), output=str(out), progress=False)
    synthesize(config, engine=scripted_engine(smol_tokenizer, gemma_tokenizer))
    assert main(["view", str(out)]) == 0
    page = (out / "view.html").read_text()
    # The id travels as JSON with every "<" escaped, and is drawn as text, never as markup.
    assert "\\u003cb>x\\u003c/b>" in page and "<b>x</b>" not in page
    assert '"teacher"' in page and '"student"' in page  # the spans' roles, coloured by the page's script
    assert main(["view", str(tmp_path / "missing")]) == 2  # a clear error, not a traceback


def test_a_changed_prompt_under_a_done_id_is_not_skipped_as_done(tmp_path, smol_tokenizer, gemma_tokenizer, capsys):
    from tessy.cli import synthesize as cli_synthesize
    from tessy.cli.main import EXIT_UNFINISHED, main
    from tessy.records import prompt_sha256

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "prompt": "What is 3+4?"}, {"id": "b", "prompt": "What is 1+1?"}])
    out = tmp_path / "run"
    args = ["synthesize", "--input", str(prompts), "--output", str(out), "--no-progress"]
    cli_synthesize.ENGINE_FACTORY = lambda config: scripted_engine(smol_tokenizer, gemma_tokenizer)
    try:
        assert main(args) == 0
        assert read(out / "records.jsonl")[0]["prompt_sha256"] == prompt_sha256(
            [{"role": "user", "content": "What is 3+4?"}])
        write_prompts(prompts, [{"id": "a", "prompt": "What is 30+40?"}, {"id": "b", "prompt": "What is 1+1?"}])
        assert main(args) == EXIT_UNFINISHED
    finally:
        cli_synthesize.ENGINE_FACTORY = None
    captured = capsys.readouterr()
    assert "1 ids are done but their prompt changed" in captured.out
    assert "1 with a changed prompt" in captured.err
    assert len(read(out / "records.jsonl")) == 2  # nothing duplicated, nothing rewritten


@pytest.mark.real_models  # the student (the demo's) loads before the teacher fails
def test_nothing_is_written_when_the_models_do_not_load(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "prompt": "What is 3+4?"}])
    config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "run"), progress=False)
    config.teacher.model = str(tmp_path / "no-such-model")
    import pytest

    with pytest.raises(Exception, match="no-such-model"):
        synthesize(config)
    assert not (tmp_path / "run" / "run.json").exists()  # a corrected rerun is not refused as "another config"


def test_resuming_against_another_served_model_is_refused(tmp_path, smol_tokenizer, gemma_tokenizer):
    import pytest

    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "prompt": "What is 3+4?"}])
    config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "run"), progress=False)
    engine = scripted_engine(smol_tokenizer, gemma_tokenizer)
    engine.parties["teacher"].backend.served_model = "org/teacher-v1"
    assert synthesize(config, engine=engine).written == 1
    record = read(tmp_path / "run" / "records.jsonl")[0]
    assert record["models"]["teacher"]["model"] == "org/teacher-v1"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["served_models"] == {
        "teacher": "org/teacher-v1"}
    engine = scripted_engine(smol_tokenizer, gemma_tokenizer)
    engine.parties["teacher"].backend.served_model = "org/teacher-v2"
    with pytest.raises(RuntimeError, match=r"other served models \(teacher: 'org/teacher-v1' before, "
                                           r"'org/teacher-v2' now\).*--overwrite"):
        synthesize(config, engine=engine)
    config.overwrite = True
    assert synthesize(config, engine=engine).written == 1
