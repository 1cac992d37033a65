"""`tessy export`: filters and drop counts, the id-hash split, determinism, each format read back by the
library that consumes it, the dataset card, chat-template round trips with real tokenizers, atomic
writes and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessy.cli.main import main
from tessy.export import Filters, export_runs
from tessy.export.select import split_of
from tessy.export.template import round_trip_problem
from tessy.formats import get_format


def make_record(rid, method="tessy", finish="stop", share=0.5, prompt="What is 2 + 3?", content=None,
                system=None, fmt="plain"):
    """A record shaped like the engine's: spans concatenate to the response."""
    student, teacher = "Okay, let me add. ", "2 + 3 = 5, so the answer is 5."
    spans = [{"role": "student", "section": "response", "text": student, "tokens_student": 6, "tokens_own": 6,
              "generated": 20, "discarded": 14, "forced": False},
             {"role": "teacher", "section": "response", "text": teacher, "tokens_student": 12, "tokens_own": 11,
              "generated": 20, "discarded": 9, "forced": False}]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    messages.append({"role": "assistant", "content": content if content is not None else student + teacher})
    return {"id": rid, "method": method, "messages": messages, "spans": spans,
            "totals": {"spans": 2, "tokens_student": 18, "teacher_tokens_student": round(18 * share),
                       "teacher_share": share, "thinking_teacher_share": None, "generated": 40, "discarded": 23},
            "finish_reason": finish, "timings": {"wall_s": 1.0, "predict_s": 0.0, "generate_s": {}},
            "models": {"teacher": {"model": "gemma3-270m", "format": "plain", "predictor": "lexicon"},
                       "student": {"model": "smollm2-135m-instruct", "format": fmt, "predictor": "lexicon"}},
            "config_fingerprint": "fp123", "tessy_version": "0.1.0"}


def write_run(folder: Path, records) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "run.json").write_text(json.dumps({"fingerprint": "fp123", "config": {"method": "tessy"}}))
    return folder


def mixed_run(tmp_path, n=40):
    records = [make_record(f"q{i:03d}", share=i / (n - 1)) for i in range(n)]
    records += [make_record("cut-len", finish="length"), make_record("cut-rep", finish="repetition"),
                make_record("cut-ctx", finish="context"), make_record("cut-spans", finish="max_spans"),
                make_record("other", method="teacher-only", share=1.0)]
    return write_run(tmp_path / "run", records)


def test_default_filters_keep_only_complete_responses_and_count_drops(tmp_path):
    result = export_runs([mixed_run(tmp_path)], tmp_path / "out", to="messages", validation_fraction=0.25)
    assert result["kept"] == 41
    assert result["dropped"] == {"finish_reason=context": 1, "finish_reason=length": 1,
                                 "finish_reason=max_spans": 1, "finish_reason=repetition": 1}
    rows = [json.loads(line) for split in ("train", "validation")
            for line in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == 41 and all(r["finish_reason"] == "stop" for r in rows)
    # Each row is in the split its id hashes to, sorted by id within the split.
    for split in ("train", "validation"):
        ids = [json.loads(x)["id"] for x in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]
        assert ids == sorted(ids) and all(split_of(i, 0.25) == split for i in ids)
    assert 0 < result["splits"]["validation"] < result["splits"]["train"]


def test_method_share_and_finish_filters(tmp_path):
    run = mixed_run(tmp_path)
    filters = Filters(finish_reasons=("stop", "length"), methods=("tessy",), teacher_share=(0.25, 0.75))
    result = export_runs([run], tmp_path / "out", filters=filters, validation_fraction=0.0)
    shares = [json.loads(x)["teacher_share"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert shares and all(0.25 <= s <= 0.75 for s in shares)
    assert result["dropped"]["method"] == 1 and result["dropped"]["teacher_share"] == 40 - len(shares) + 1
    assert "finish_reason=length" not in result["dropped"]  # kept on request (share 0.5)
    assert not (tmp_path / "out" / "validation.jsonl").exists()
    with pytest.raises(ValueError, match="unknown finish reason"):
        Filters(finish_reasons=("stopped",))
    with pytest.raises(ValueError, match="teacher share range"):
        Filters(teacher_share=(0.8, 0.2))


def test_split_is_stable_across_exports_and_seeds():
    ids = [f"HumanEval/{i}" for i in range(400)]
    val = [i for i in ids if split_of(i, 0.1) == "validation"]
    assert 20 <= len(val) <= 60  # about 10%
    assert val == [i for i in ids if split_of(i, 0.1, seed=0) == "validation"]
    assert val != [i for i in ids if split_of(i, 0.1, seed=1) == "validation"]
    # Growing the fraction only moves ids into validation, never out.
    assert set(val) <= {i for i in ids if split_of(i, 0.2) == "validation"}


@pytest.mark.parametrize("fmt", ["messages", "parquet", "sharegpt", "hf"])
def test_output_is_deterministic(tmp_path, fmt):
    run = mixed_run(tmp_path)
    export_runs([run], tmp_path / "a" / "out", to=fmt)
    export_runs([run], tmp_path / "b" / "out", to=fmt)
    files_a = sorted(p.relative_to(tmp_path / "a" / "out") for p in (tmp_path / "a" / "out").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b" / "out") for p in (tmp_path / "b" / "out").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name in ("README.md", "export.json"):  # they name the output folder
            continue
        assert (tmp_path / "a" / "out" / rel).read_bytes() == (tmp_path / "b" / "out" / rel).read_bytes(), rel


def test_messages_jsonl_loads_as_trl_conversational_data(tmp_path, smol_tokenizer):
    from datasets import load_dataset
    from trl.data_utils import apply_chat_template, is_conversational

    export_runs([mixed_run(tmp_path)], tmp_path / "out", to="messages", validation_fraction=0.25)
    data = load_dataset(str(tmp_path / "out"))  # through the card's `configs`
    assert set(data) == {"train", "validation"}
    assert len(data["train"]) + len(data["validation"]) == 41
    example = data["train"][0]
    assert is_conversational(example)
    text = apply_chat_template({"messages": example["messages"]}, smol_tokenizer)["text"]
    assert example["messages"][-1]["content"] in text
    assert isinstance(example["spans"], list) and example["spans"][0]["role"] == "student"


def test_parquet_and_hf_folder_load(tmp_path):
    from datasets import load_dataset, load_from_disk

    run = mixed_run(tmp_path)
    export_runs([run], tmp_path / "pq", to="parquet", validation_fraction=0.25)
    pq = load_dataset(str(tmp_path / "pq"))
    export_runs([run], tmp_path / "hf", to="hf", validation_fraction=0.25)
    hf = load_from_disk(str(tmp_path / "hf"))
    for data in (pq, hf):
        assert {k: len(v) for k, v in data.items()} == {k: len(v) for k, v in pq.items()}
        assert data["train"].features["messages"].feature["content"].dtype == "string"
        assert data["train"][0]["messages"][-1]["role"] == "assistant"
    assert pq["train"]["id"] == hf["train"]["id"]
    assert pq["train"]["teacher_share"] == hf["train"]["teacher_share"]


def check_llama_factory_entry(folder: Path, name: str) -> list[dict]:
    """What LLaMA-Factory's ShareGPT reader requires of a dataset_info.json entry and its rows."""
    from datasets import load_dataset

    info = json.loads((folder / "dataset_info.json").read_text())[name]
    assert info["formatting"] == "sharegpt"
    assert set(info) <= {"file_name", "formatting", "columns", "tags", "split", "num_samples", "ranking"}
    assert set(info["tags"]) <= {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag",
                                 "function_tag", "system_tag"}
    columns, tags = info["columns"], info["tags"]
    rows = load_dataset("json", data_files=str(folder / info["file_name"]), split="train")
    out = []
    for row in rows:
        turns = row[columns["messages"]]
        assert len(turns) % 2 == 0, "ends with the assistant turn"
        for index, turn in enumerate(turns):  # human at odd positions, gpt at even (1-based)
            expected = tags["user_tag"] if index % 2 == 0 else tags["assistant_tag"]
            assert turn[tags["role_tag"]] == expected
            assert isinstance(turn[tags["content_tag"]], str)
        assert isinstance(row[columns["system"]], str)
        out.append(row)
    return out


def test_sharegpt_layout_and_dataset_info(tmp_path):
    records = [make_record(f"s{i}", system="You are terse.") for i in range(6)] + [make_record("plain")]
    export_runs([write_run(tmp_path / "run", records)], tmp_path / "out", to="sharegpt", dataset_name="mine",
                validation_fraction=0.3)
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert set(info) == {"mine_train", "mine_validation"}
    rows = check_llama_factory_entry(tmp_path / "out", "mine_train") + check_llama_factory_entry(tmp_path / "out", "mine_validation")
    assert len(rows) == 7
    by_id = {r["id"]: r for r in rows}
    assert by_id["s0"]["system"] == "You are terse." and by_id["plain"]["system"] == ""
    assert by_id["s0"]["conversations"][1]["value"] == records[0]["messages"][-1]["content"]


def test_dataset_card(tmp_path):
    from huggingface_hub import DatasetCard

    export_runs([mixed_run(tmp_path)], tmp_path / "out", to="parquet", validation_fraction=0.25)
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    assert card.data.configs[0]["data_files"][0]["path"].endswith(".parquet")
    assert "text-generation" in card.data.task_categories
    text = card.text
    for needle in ("smollm2-135m-instruct", "gemma3-270m", "lexicon", "`fp123`", "| read | 45 |",
                   "| dropped: finish_reason=length | 1 |", "tokens_own", "discarded", "forced", "teacher share"):
        assert needle in text, needle
    stats = json.loads((tmp_path / "out" / "export.json").read_text())
    assert stats["kept"] == 41 and stats["records_read"] == 45
    assert stats["teacher_share"]["overall"] == pytest.approx(
        sum(round(18 * i / 39) for i in range(40)) / (41 * 18) + 18 / (41 * 18))


def test_smollm2_template_round_trips_the_records(smol_tokenizer):
    record = make_record("a")
    assert round_trip_problem(smol_tokenizer, record["messages"]) is None
    assert round_trip_problem(smol_tokenizer, make_record("b", system="Be brief.")["messages"]) is None
    # A content the template changes is caught (a trailing newline is kept by ChatML; leading whitespace too).
    messages = record["messages"][:-1] + [{"role": "assistant", "content": "Four.<|im_end|>\nextra"}]
    assert round_trip_problem(smol_tokenizer, messages) is not None


def test_qwen3_template_round_trip_of_thinking(qwen3_tokenizer):
    fmt = get_format("qwen3")
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    closed = fmt.assistant_content("Okay, 2 + 3 = 5.", "The answer is 5.")
    assert closed.startswith("<think>\n") and "</think>" in closed
    assert round_trip_problem(qwen3_tokenizer, user + [{"role": "assistant", "content": closed}]) is None
    # Thinking cut by the budget is left open; Qwen3's template would close it differently, so such a
    # record (finish_reason "length", dropped by default anyway) does not round-trip.
    open_ = fmt.assistant_content("Okay, 2 + 3", "", thinking_done=False)
    problem = round_trip_problem(qwen3_tokenizer, user + [{"role": "assistant", "content": open_}])
    assert problem and "rewrites the assistant turn" in problem


def test_export_drops_what_the_template_would_change(tmp_path, qwen3_tokenizer):
    fmt = get_format("qwen3")
    good = make_record("good", content=fmt.assistant_content("Okay, add.", "5"), fmt="qwen3")
    bad = make_record("bad", content=fmt.assistant_content("Okay, add", "", thinking_done=False), fmt="qwen3")
    result = export_runs([write_run(tmp_path / "run", [good, bad])], tmp_path / "out",
                         filters=Filters(finish_reasons=("stop",)), tokenizer=qwen3_tokenizer, validation_fraction=0)
    assert result["kept"] == 1 and result["dropped"] == {"chat_template": 1}


def test_verification_filter(tmp_path):
    from tessy.export.runs import response_hash

    records = [make_record(f"v{i}") for i in range(4)]
    run = write_run(tmp_path / "run", records)
    lines = [{"id": "v0", "response_hash": response_hash(records[0]), "status": "pass"},
             {"id": "v1", "response_hash": response_hash(records[1]), "status": "fail"},
             {"id": "v2", "response_hash": "stale", "status": "pass"}]  # judged an older response
    (run / "verdicts-math.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = export_runs([run], tmp_path / "out", filters=Filters(verification=("pass",)), validation_fraction=0)
    assert result["kept"] == 1
    assert result["dropped"] == {"verification=fail": 1, "verification=unverified": 2}
    row = json.loads((tmp_path / "out" / "train.jsonl").read_text())
    assert row["id"] == "v0" and row["verification"] == "pass"
    with pytest.raises(FileNotFoundError, match="no verdicts of 'humaneval'"):
        export_runs([run], tmp_path / "o2", filters=Filters(verification=("pass",), verifier="humaneval"))


def test_bad_input_leaves_nothing_behind(tmp_path):
    run = mixed_run(tmp_path)
    with open(run / "records.jsonl", "a") as f:
        f.write("{not json\n")
        f.write(json.dumps(make_record("after")) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl.*line 46"):
        export_runs([run], tmp_path / "out")
    # A record the ShareGPT layout cannot hold fails the export after rows were being written.
    bad = make_record("two-users")
    bad["messages"].insert(1, {"role": "user", "content": "again"})
    run2 = write_run(tmp_path / "run2", [make_record(f"ok{i}") for i in range(5)] + [bad])
    with pytest.raises(ValueError, match="two-users"):
        export_runs([run2], tmp_path / "out", to="sharegpt", validation_fraction=0)
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []
    # Duplicate ids across runs are refused.
    with pytest.raises(ValueError, match="in both"):
        export_runs([run2, write_run(tmp_path / "run3", [make_record("ok1")])], tmp_path / "out")


def test_existing_output_needs_overwrite(tmp_path):
    run = mixed_run(tmp_path)
    export_runs([run], tmp_path / "out", validation_fraction=0)
    with pytest.raises(ValueError, match="--overwrite"):
        export_runs([run], tmp_path / "out")
    export_runs([run], tmp_path / "out", to="parquet", overwrite=True, validation_fraction=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "export.json", "train.parquet"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli(tmp_path, capsys):
    run = mixed_run(tmp_path)
    code = main(["export", str(run), "--to", "sharegpt", "-o", str(tmp_path / "lf"), "--teacher-share", "0:0.5",
                 "--method", "tessy", "--validation-fraction", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "exported 20 of 45 records (train 20) as sharegpt" in out and "teacher_share 20" in out
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "no run folder" in capsys.readouterr().err
