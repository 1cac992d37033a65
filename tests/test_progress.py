"""`tessy --version`, and the progress bars of verify, eval and shards: on stderr with a total and an
ETA, only on a terminal unless asked for, off with --no-progress, and never changing what is written."""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version

import pytest

from tessy.cli.main import main
from tessy.progress import bar
from tessy.shards import Shard, merge_runs, owned_rows, shard_of, shards_bar
from tessy.verify import verify_run
from tests.test_verify import record, write_run

ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")  # tqdm's [elapsed<remaining]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tessy {version('tessy')}\n"


def test_bar_shows_on_a_terminal_or_when_asked(capsys, monkeypatch):
    with bar(3, "work", "thing") as b:  # pytest's stderr is no terminal
        b.update(3)
    assert capsys.readouterr().err == ""
    with bar(3, "work", "thing", show=True) as b:
        b.update(3)
    err = capsys.readouterr().err
    assert "work: 100%" in err and "3/3" in err and "thing/s" in err and ETA.search(err)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with bar(2, "tty", "thing") as b:
        b.update(2)
    assert "2/2" in capsys.readouterr().err
    with bar(2, "off", "thing", show=False) as b:
        b.update(2)
    assert capsys.readouterr().err == ""


def _math_run(tmp_path, name="run"):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"m{i}", "answer": i}) + "\n" for i in range(4)))
    run = write_run(tmp_path / name, [record(f"m{i}", f"It is {i if i % 2 else i + 1}.") for i in range(4)])
    return run, problems


def _verdicts(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run / "verdicts-math.jsonl").read_text().splitlines()]


def test_verify_bar_counts_records_and_changes_no_verdict(tmp_path, capsys):
    run_a, problems = _math_run(tmp_path, "a")
    run_b, _ = _math_run(tmp_path, "b")
    result_a = verify_run(run_a, "math", problems=problems, show_progress=True)
    err = capsys.readouterr().err
    assert "verify math: 100%" in err and "4/4" in err and ETA.search(err) and "pass=2" in err
    result_b = verify_run(run_b, "math", problems=problems, show_progress=False)
    assert capsys.readouterr().err == ""
    assert {**result_a, "file": ""} == {**result_b, "file": ""} and _verdicts(run_a) == _verdicts(run_b)
    verify_run(run_a, "math", problems=problems, show_progress=True)  # nothing left to judge: no bar
    assert capsys.readouterr().err == ""


def test_verify_command_bar_on_a_terminal_and_no_progress(tmp_path, capsys, monkeypatch):
    run, problems = _math_run(tmp_path)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["verify", str(run), "--with", "math", "--problems", str(problems)]) == 0
    first = capsys.readouterr()
    assert "verify math" in first.err and "4/4" in first.err
    (run / "verdicts-math.jsonl").unlink()
    assert main(["verify", str(run), "--with", "math", "--problems", str(problems), "--no-progress"]) == 0
    second = capsys.readouterr()
    assert second.err == "" and second.out == first.out  # stdout is the same with or without the bar


# ---------------------------------------------------------------------------- shards


def test_owned_rows_is_each_shards_total():
    from tessy.inputs import PromptItem, Reject

    items = [PromptItem(f"q{i}", [], i + 1) for i in range(40)] + [Reject(41, "not JSON")]
    counts = [owned_rows(items, Shard(i, 3)) for i in range(3)]
    assert sum(counts) == 41 and counts == [sum(shard_of(f"q{j}", 3) == i for j in range(40))
                                            + (shard_of("line:41", 3) == i) for i in range(3)]
    assert owned_rows(items, "1/3", limit=10) == sum(shard_of(f"q{j}", 3) == 1 for j in range(10))


def test_shards_bar(capsys):
    with shards_bar(4, show=True, done=1) as b:
        b.update(3)
    err = capsys.readouterr().err
    assert "shards: 100%" in err and "4/4" in err and "shard/s" in err


def _shard_folder(path, index, count, ids):
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"fingerprint": "fp", "config": {"shard": f"{index}/{count}"}}))
    (path / "records.jsonl").write_text("".join(json.dumps({"id": i, "n": 1}) + "\n" for i in ids))
    return path


def test_merge_bar_over_the_shards_and_the_same_merge(tmp_path, capsys):
    ids = [f"q{i}" for i in range(20)]
    folders = [_shard_folder(tmp_path / f"s{i}", i, 2, [x for x in ids if shard_of(x, 2) == i]) for i in range(2)]
    merge_runs(folders, tmp_path / "with", show_progress=True)
    err = capsys.readouterr().err
    assert "merge: 100%" in err and "2/2" in err and "records=20" in err and ETA.search(err)
    merge_runs(folders, tmp_path / "without")
    assert capsys.readouterr().err == ""
    for name in ("records.jsonl", "run.json"):
        a, b = ((tmp_path / d / name).read_text().replace(f"{tmp_path}/{d}", "OUT") for d in ("with", "without"))
        assert a == b


# ---------------------------------------------------------------------------- eval


@pytest.mark.slow
def test_eval_bars_per_model_and_the_same_answers(tmp_path, smol_tokenizer, capsys):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tessy.models import resolve_model
    from tessy.verify.evaluate import evaluate

    config = AutoConfig.from_pretrained(resolve_model("smollm2-135m-instruct"))
    config.update({"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 16})
    torch.manual_seed(0)
    tiny = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(config).save_pretrained(tiny)
    smol_tokenizer.save_pretrained(tiny)
    problems = tmp_path / "held.jsonl"
    problems.write_text("".join(json.dumps({"id": f"h{i}", "prompt": f"What is {i} + 1?", "answer": i + 1}) + "\n"
                                for i in range(3)))
    models = {"a": str(tiny), "b": str(tiny)}
    shown = evaluate(models, problems, "math", tmp_path / "bars", max_new_tokens=4, batch_size=2, show_progress=True)
    err = capsys.readouterr().err
    for name in models:
        assert re.search(rf"eval {name}: answer: 100%.*3/3", err) and re.search(rf"eval {name}: verify: 100%.*3/3", err)
    assert ETA.search(err)
    quiet = evaluate(models, problems, "math", tmp_path / "quiet", max_new_tokens=4, batch_size=2)
    assert capsys.readouterr().err == ""
    assert [{**r, "path": ""} for r in shown] == [{**r, "path": ""} for r in quiet]
    for name in models:
        lines = [sorted((tmp_path / d / name / "records.jsonl").read_text().splitlines()) for d in ("bars", "quiet")]
        assert lines[0] == lines[1]
