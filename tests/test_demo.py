"""`tessy demo`, the README's first command, at a tiny size with the small pair: real models, real
HumanEval prompts, records that validate, a view that shows both models, and a rerun that redoes
nothing. The default demo itself, with the Qwen pair, is tests/test_demo_output.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_models


def demo(folder, *extra):
    return subprocess.run(
        [sys.executable, "-m", "tessy.cli.main", "demo", "--output", str(folder), "--problems", "2",
         "--max-tokens", "32", "--no-progress", "--pair", "small", *extra],
        capture_output=True, text=True, timeout=600,
    )


def test_demo_writes_valid_records_and_a_view_then_resumes(tmp_path):
    from tessy.records import read_records, validate_record

    done = demo(tmp_path / "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    records = list(read_records(tmp_path / "demo" / "run" / "records.jsonl"))
    assert sorted(r["id"] for r in records) == ["HumanEval/0", "HumanEval/1"]
    for record in records:
        validate_record(record)
        assert record["totals"]["tokens_student"] <= 32
        assert "\ufffd" not in record["messages"][-1]["content"]
    view = (tmp_path / "demo" / "view.html").read_text(encoding="utf-8")
    assert "HumanEval/0" in view and "HumanEval/1" in view
    assert view.index("HumanEval/0") < view.index("HumanEval/1")  # in the prompts' order
    assert "view.html" in done.stdout and "records.jsonl" in done.stdout

    again = demo(tmp_path / "demo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list(read_records(tmp_path / "demo" / "run" / "records.jsonl"))) == 2  # nothing redone


@pytest.mark.parametrize("pair", ["small", "qwen"])
def test_each_demo_pair_is_a_valid_config(tmp_path, pair):
    from tessy.cli.demo import demo_config, write_prompts
    from tessy.config import SynthesizeConfig

    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    config = demo_config(pair, prompts, tmp_path)
    assert config.concurrency == 3
    if pair == "small":  # the small pair's fingerprint is what the demo's always was
        default = SynthesizeConfig(max_tokens=160)
        assert config.data_fields() == default.data_fields()
    else:
        assert config.student.voice == "think-aloud" and config.teacher.voice == "think-steps"
        assert config.student.format == config.teacher.format == "qwen3"
        assert config.max_answer_tokens < config.max_tokens


def test_the_qwen_example_config_is_the_qwen_demo(tmp_path):
    from pathlib import Path

    from tessy.cli.demo import demo_config, write_prompts
    from tessy.config import SynthesizeConfig
    from tessy.settings import config_from_sources

    example = Path(__file__).parents[1] / "examples" / "pairs" / "qwen.yaml"
    from_yaml = config_from_sources(SynthesizeConfig, str(example), {})
    demo = demo_config("qwen", write_prompts(tmp_path / "prompts.jsonl", 1), tmp_path)
    assert from_yaml.data_fields() == demo.data_fields()
