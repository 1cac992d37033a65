"""Inputs: prompts from JSONL, Parquet and HF dataset folders; a Reject for every bad row."""

from __future__ import annotations

import gzip
import json

import pytest

from tessy.inputs import InputError, PromptItem, Reject, count_prompts, messages_id, read_prompts


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_prompt_and_messages(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}]
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "q1", "prompt": "What is 2 + 2?"},
        {"id": 7, "messages": msgs, "prompt": "ignored"},
        {"prompt": "no id here"},
    ])
    items = list(read_prompts(p))
    assert all(isinstance(i, PromptItem) for i in items)
    assert [i.id for i in items[:2]] == ["q1", "7"]
    assert items[0].messages == [{"role": "user", "content": "What is 2 + 2?"}]
    assert items[1].messages == msgs
    assert [i.line for i in items] == [1, 2, 3]
    hashed = items[2].id
    assert len(hashed) == 16 and hashed == messages_id([{"role": "user", "content": "no id here"}])
    assert [i.id for i in read_prompts(p)] == [i.id for i in items]  # stable
    assert count_prompts(p) == 3


def test_custom_fields_and_system_prompt(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"uid": "a", "question": "Q1"},
        {"uid": "b", "conv": [{"role": "system", "content": "own"},
                              {"role": "user", "content": "Q2"}]},
    ])
    items = list(read_prompts(p, prompt_field="question", messages_field="conv", id_field="uid",
                              system_prompt="Think step by step."))
    assert items[0].messages == [{"role": "system", "content": "Think step by step."},
                                 {"role": "user", "content": "Q1"}]
    assert items[1].messages[0] == {"role": "system", "content": "own"}  # kept, not doubled


def test_rejects_name_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [
        '{"id": "ok1", "prompt": "fine"}',                                 # 1
        '{"id": "x", "prompt": "unterminated',                              # 2 malformed JSON
        '',                                                                 # 3 blank: skipped
        '["a", "list"]',                                                    # 4 not an object
        '{"id": "m"}',                                                      # 5 missing prompt
        '{"id": "e", "prompt": "   "}',                                     # 6 empty prompt
        '{"id": "t", "prompt": 42}',                                        # 7 wrong type
        '{"id": true, "prompt": "p"}',                                      # 8 bad id type
        '{"id": "r", "messages": [{"role": "user", "content": "q"}, '
        '{"role": "assistant", "content": "a"}]}',                          # 9 ends with assistant
        '{"id": "c", "messages": [{"role": "user", "content": 5}]}',        # 10 content type
        '{"id": "o", "messages": [{"role": "robot", "content": "q"}]}',     # 11 role
        '{"id": "n", "messages": "hello"}',                                 # 12 messages type
        '{"id": "ok1", "prompt": "again"}',                                 # 13 duplicate id
        '{"prompt": "fine"}',                                               # 14 ok (hash id)
        '{"prompt": "fine"}',                                               # 15 duplicate hash
        '{"id": "ok2", "prompt": "fine"}',                                  # 16 ok
    ]
    p.write_text("\n".join(lines) + "\n")
    out = list(read_prompts(p))
    rejects = {r.line: r for r in out if isinstance(r, Reject)}
    good = [i for i in out if isinstance(i, PromptItem)]
    assert [(i.line, i.id) for i in good][0] == (1, "ok1") and good[-1].id == "ok2"
    assert sorted(rejects) == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15]
    for n, r in rejects.items():
        assert r.reason.startswith(f"line {n}:"), r
    assert "malformed JSON" in rejects[2].reason
    assert "expected a JSON object" in rejects[4].reason
    assert "missing field 'prompt'" in rejects[5].reason and rejects[5].id == "m"
    assert "'prompt' is empty" in rejects[6].reason
    assert "'prompt' must be a string" in rejects[7].reason
    assert "'id' must be a string or an integer" in rejects[8].reason
    assert "ends with a turn by 'assistant'" in rejects[9].reason and rejects[9].id == "r"
    assert "'messages'[0].content" in rejects[10].reason
    assert "'messages'[0].role" in rejects[11].reason
    assert "'messages' must be a non-empty list" in rejects[12].reason
    assert "duplicate id 'ok1'" in rejects[13].reason
    assert "first seen on line 1" in rejects[13].reason
    assert "first seen on line 14" in rejects[15].reason
    assert count_prompts(p) == 15  # non-blank rows, rejects included


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 2500  # more than one batch
    table = pa.table({"id": list(range(n)), "prompt": [f"question {i}" for i in range(n)]})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=1000)
    items = list(read_prompts(tmp_path / "p.parquet"))
    assert len(items) == n and items[0].id == "0" and items[-1].line == n
    assert items[1234].messages == [{"role": "user", "content": "question 1234"}]
    assert count_prompts(tmp_path / "p.parquet") == n


def test_parquet_messages_and_nulls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = [[{"role": "user", "content": "hi"}], None]
    table = pa.table({"messages": msgs, "prompt": [None, None]})
    pq.write_table(table, tmp_path / "m.parquet")
    out = list(read_prompts(tmp_path / "m.parquet"))
    assert isinstance(out[0], PromptItem) and out[0].messages == msgs[0]
    assert isinstance(out[1], Reject) and "line 2: field 'prompt' is null" in out[1].reason


def test_hf_dataset_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "prompt": ["P1", "", "P3"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    out = list(read_prompts(tmp_path / "ds"))
    assert [type(x).__name__ for x in out] == ["PromptItem", "Reject", "PromptItem"]
    assert out[2].id == "c" and out[2].line == 3 and out[1].line == 2
    assert count_prompts(tmp_path / "ds") == 3

    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(list(read_prompts(tmp_path / "dd"))) == 3  # train by default
    assert [x.id for x in read_prompts(tmp_path / "dd", split="test")] == ["a"]


def test_folder_of_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "shards"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"id": "1", "prompt": "x"}, {"id": "2", "prompt": "y"}])
    pq.write_table(pa.table({"id": ["3", "1"], "prompt": ["z", "dup"]}), d / "b.parquet")
    out = list(read_prompts(d))
    assert [x.line for x in out] == [1, 2, 3, 4]
    assert isinstance(out[3], Reject) and "first seen on line 1" in out[3].reason
    assert count_prompts(d) == 4


def test_gzip_and_json_array(tmp_path):
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write(json.dumps({"prompt": "zipped"}) + "\n")
    assert next(read_prompts(tmp_path / "p.jsonl.gz")).messages[0]["content"] == "zipped"
    (tmp_path / "arr.json").write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    assert [x.line for x in read_prompts(tmp_path / "arr.json")] == [1, 2]
    assert count_prompts(tmp_path / "arr.json") == 2


def test_unknown_type_and_missing(tmp_path):
    (tmp_path / "p.csv").write_text("prompt\nhi\n")
    with pytest.raises(ValueError, match="unknown file type '.csv'"):
        read_prompts(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .jsonl, .json or .parquet"):
        read_prompts(tmp_path / "empty")


# ---------------------------------------------------------------------------- bad inputs (issue 9)


def test_bom_does_not_lose_the_first_prompt(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"id": "first", "prompt": "one"}\n{"id": "second", "prompt": "two"}\n')
    assert [x.id for x in read_prompts(p)] == ["first", "second"]
    assert count_prompts(p) == 2
    j = tmp_path / "p.json"
    j.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"prompt": "a"}], indent=2).encode())
    assert [x.messages[0]["content"] for x in read_prompts(j)] == ["a"]


def test_json_documents_and_json_lines_named_json(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps([{"id": "a", "prompt": "A"}, {"id": "b", "prompt": "B"}], indent=4))
    assert [x.id for x in read_prompts(pretty)] == ["a", "b"] and count_prompts(pretty) == 2
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"id": "only", "prompt": "A"}, indent=2))
    assert [x.id for x in read_prompts(single)] == ["only"] and count_prompts(single) == 1
    lines = write_jsonl(tmp_path / "lines.json", [{"id": "x", "prompt": "X"}, {"id": "y", "prompt": "Y"}])
    assert [x.id for x in read_prompts(lines)] == ["x", "y"] and count_prompts(lines) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"prompt": "a"},\n  {"prompt": "b"\n]\n')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON at line 4, column 1"):
        read_prompts(bad)


def test_lone_surrogates_are_rejects_not_aborts(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [
        '{"prompt": "no id \\udfff"}',
        '{"id": "s", "prompt": "with id \\ud800"}',
        '{"id": "\\udfff", "prompt": "bad id"}',
        '{"messages": [{"role": "system", "content": "\\udc00"}, {"role": "user", "content": "q"}]}',
        {"id": "ok", "prompt": "fine"},
    ])
    out = list(read_prompts(p))
    assert [type(x).__name__ for x in out] == ["Reject"] * 4 + ["PromptItem"]
    assert out[0].reason == "line 1: field 'prompt' is not valid Unicode text: lone surrogate '\\udfff' at character 7"
    assert out[1].id == "s" and "lone surrogate '\\ud800'" in out[1].reason
    assert "field 'id' is not valid Unicode text" in out[2].reason
    assert "field 'messages'[0].content is not valid Unicode text" in out[3].reason


def test_prompt_length_is_checked_by_characters_before_tokenizing(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"id": "huge", "prompt": "x" * 10_000_000}, {"id": "ok", "prompt": "hi"}])
    out = list(read_prompts(p))
    assert out[0].reason == "line 1: prompt is 10,000,000 characters, more than max_prompt_chars (200,000)"
    assert out[1].id == "ok"
    sys_prompt = list(read_prompts(p, system_prompt="s" * 10, max_chars=11))  # the system turn counts
    assert isinstance(sys_prompt[1], Reject) and "12 characters" in sys_prompt[1].reason


def test_null_and_missing_fields_are_told_apart(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"id": "n", "prompt": None}, {"id": "m", "question": "q"},
                                           {"id": "c", "messages": [{"role": "user", "content": None}]}])
    out = list(read_prompts(p))
    assert out[0].reason == "line 1: field 'prompt' is null"
    assert out[1].reason == "line 2: missing field 'prompt' (or 'messages'); the row has: id, question"
    assert out[2].reason == "line 3: field 'messages'[0].content must be a string, got null"


def test_malformed_json_message_reads_well(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", ['{"id": "x", "prompt": "unterminated', {"prompt": "ok"}])
    reason = next(iter(read_prompts(p))).reason
    assert reason == "line 1: malformed JSON (Unterminated string starting at column 23)"
    assert "at at" not in reason


def test_a_source_without_the_prompt_field_is_an_error_naming_the_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["a"], "answer": ["b"]}), tmp_path / "q.parquet")
    with pytest.raises(InputError, match=r"q.parquet: no column has the prompt field 'prompt' \(or 'messages'\); "
                                         r"fields found: answer, question"):
        read_prompts(tmp_path / "q.parquet")
    assert len(list(read_prompts(tmp_path / "q.parquet", prompt_field="question"))) == 1
    p = write_jsonl(tmp_path / "q.jsonl", [{"question": "a"}, {"question": "b"}])
    with pytest.raises(InputError, match=r"q.jsonl: no row has the prompt field 'prompt'"):
        read_prompts(p)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"question": "a"}, {"prompt": "b"}])
    assert [type(x).__name__ for x in read_prompts(mixed)] == ["Reject", "PromptItem"]  # one good row: rejects


def test_whole_source_errors_name_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(InputError, match=r"empty.jsonl: holds no prompts"):
        read_prompts(tmp_path / "empty.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(InputError, match=r"bad.parquet: not a readable Parquet file"):
        read_prompts(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet: not a readable Parquet file"):
        count_prompts(tmp_path / "bad.parquet")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "state.json").write_text("{}")
    with pytest.raises(InputError, match=r"fake: looks like a folder saved with datasets.save_to_disk"):
        read_prompts(fake)
    with pytest.raises(InputError, match=r"--split 'test' applies only to a dataset folder"):
        read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}]), split="test")


def test_truncated_gzip_names_the_file_and_line(tmp_path):
    rows = [{"id": str(i), "prompt": f"prompt number {i} " * 20} for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    p = tmp_path / "p.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    items = read_prompts(p)  # the first rows are fine: checked up front, broken mid-way
    with pytest.raises(InputError, match=r"p.jsonl.gz: cannot read after line \d+: Compressed file ended"):
        for _ in items:
            pass
    with pytest.raises(InputError, match=r"p.jsonl.gz: cannot read after line \d+"):
        count_prompts(p)


def test_dataset_splits(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": ["a", "b"], "prompt": ["P1", "P2"]})
    datasets.DatasetDict({"test": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"dd: holds several splits \(test, validation\); choose one with --split"):
        read_prompts(tmp_path / "dd")
    assert [x.id for x in read_prompts(tmp_path / "dd", split="validation")] == ["a"]
    assert count_prompts(tmp_path / "dd", split="validation") == 1
    with pytest.raises(InputError, match=r"has no split 'dev'; it holds test, validation"):
        read_prompts(tmp_path / "dd", split="dev")


def test_rejects_in_a_folder_name_the_file(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"id": "1", "prompt": "x"}])
    write_jsonl(d / "b.jsonl", [{"id": "2", "prompt": "y"}, {"id": "3", "prompt": ""}])
    reject = [x for x in read_prompts(d) if isinstance(x, Reject)][0]
    assert reject.line == 3 and reject.reason == "line 3 (b.jsonl line 2): field 'prompt' is empty"
