"""The CPU predictor recipe of docs/predictors.md at small size, through the CLI with the two real demo models:
sample (both models) → annotate (lexicon) → train (a 2-layer cut of SmolLM2-135M) → eval (vs
lexicon and chance) → synthesize with the trained predictor on both sides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_models


def tessy(*args):
    done = subprocess.run([sys.executable, "-m", "tessy.cli.main", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"tessy {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_cpu_predictor_recipe_end_to_end(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate([
        "Okay, explain step by step: what is 12 plus 30?",
        "Write a Python function that reverses a string. Think it through first.",
    ])))
    small = ["--max-new-tokens", "40", "--segments-per-response", "3", "--min-segment-tokens", "6",
             "--max-segment-tokens", "16", "--no-progress"]
    for role in ("student", "teacher"):
        out = tessy("predictor", "sample", "--input", str(prompts), "--output", str(tmp_path / role), "--role", role, *small)
        assert "segments" in out
        segments = [json.loads(line) for line in (tmp_path / role / "segments.jsonl").read_text().splitlines()]
        assert segments and all(s["role"] == role for s in segments)
    ann = tmp_path / "annotations"
    tessy("predictor", "annotate", "--input", f"{tmp_path / 'student'},{tmp_path / 'teacher'}", "--output", str(ann),
          "--no-progress")
    predictor = tmp_path / "predictor"
    out = tessy("predictor", "train", "--data", str(ann), "--output", str(predictor), "--num-layers", "2",
                "--max-steps", "3", "--batch-size", "4", "--test-fraction", "0", "--dev-fraction", "0", "--no-progress")
    assert "trained 3 steps" in out
    config = json.loads((predictor / "config.json").read_text())
    assert config["tessy_style_label_id"] == 1 and config["tessy_label_offset"] == 0
    table = tessy("predictor", "eval", "--data", str(ann), "--split", "all", "--starts-per-segment", "2",
                  "--predictors", f"lexicon,chance,trained={predictor}", "--output", str(tmp_path / "eval.json"))
    assert all(name in table for name in ("lexicon", "chance", "trained"))
    results = json.loads((tmp_path / "eval.json").read_text())
    assert set(results["predictors"]) == {"lexicon", "chance", "trained"}
    run = tmp_path / "run"
    tessy("synthesize", "--input", str(prompts), "--limit", "1", "--output", str(run), "--max-tokens", "24",
          "--student.predictor", str(predictor), "--teacher.predictor", str(predictor), "--no-progress")
    (record,) = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert record["models"]["student"]["predictor"] == str(predictor) and record["spans"]
