"""`tessy export` lays the thinking out the way each student's trainer reads it, checked against the
real chat templates of Qwen3, DeepSeek-R1-Distill and GPT-OSS (`tests.real_templates`: TRL's copies
of the originals; GPT-OSS's on a stand-in vocabulary), plus ``--max-tokens``, the card's license and
language, and no `datasets` progress bars in the command's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessy.cli.main import main
from tessy.export import Filters, export_runs
from tessy.export.template import rendered_length
from tessy.formats import get_format
from tests.real_templates import harmony_real, qwen3_real, r1_real, trl_template
from tests.test_export import make_record, write_run

REAL = {"qwen3": qwen3_real, "deepseek-r1": r1_real, "harmony": harmony_real}
STUDENT_MODEL = {"qwen3": "Qwen/Qwen3-8B", "deepseek-r1": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                 "harmony": "openai/gpt-oss-20b", "plain": "smollm2-135m-instruct"}


def student_records(name: str, n: int = 4, teacher: str = "openai/gpt-oss-120b") -> list[dict]:
    """Records whose response is written the way the student's format writes it."""
    fmt = get_format(name)
    records = []
    for i in range(n):
        content = fmt.assistant_content(f"Okay, let me see. {i} + {i} is {2 * i}.\nWait, yes.", f"It is **{2 * i}**.")
        record = make_record(f"{name}-{i}", content=content, fmt=name, system="Be brief." if i % 2 else None)
        record["models"] = {"student": {"model": STUDENT_MODEL[name], "format": name, "predictor": "lexicon"},
                            "teacher": {"model": teacher, "format": "harmony", "predictor": "lexicon"}}
        records.append(record)
    return records


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]


def test_the_templates_are_the_real_ones():
    # What tells them apart from the project's restated templates: R1 drops the thinking of assistant
    # turns; GPT-OSS refuses channel tags in content and renders the analysis of the last turn only.
    assert "content.split('</think>')[-1]" in trl_template("deepseek_r1_distill")
    assert "You have passed a message containing <|channel|> tags" in trl_template("gptoss")
    assert "message.reasoning_content is string" in trl_template("qwen3")
    assert "<|channel|>" in harmony_real().all_special_tokens or "<|channel|>" in {
        t.content for t in harmony_real().added_tokens_decoder.values() if t.special}


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1", "harmony"])
def test_default_layout_passes_the_real_template(tmp_path, name):
    tok, fmt = REAL[name](), get_format(name)
    records = student_records(name)
    result = export_runs([write_run(tmp_path / "run", records)], tmp_path / "out", tokenizer=tok,
                         validation_fraction=0)
    assert result["kept"] == 4 and result["dropped"] == {} and result["template_problems"] == {}
    expected = {"qwen3": ("messages", "content"), "deepseek-r1": ("prompt-completion", None),
                "harmony": ("messages", "thinking")}[name]
    assert (result["options"]["layout"], result["options"]["reasoning_field"]) == expected
    for row, record in zip(rows(tmp_path / "out"), records):
        prompt, content = record["messages"][:-1], record["messages"][-1]["content"]
        if name == "deepseek-r1":
            # The prompt the student continued (without the BOS the tokenizer adds), then its text.
            assert "messages" not in row
            assert tok.bos_token + row["prompt"] == fmt.prompt_text(tok, prompt)
            assert row["prompt"] + row["completion"] == fmt.prompt_text(tok, prompt)[len(tok.bos_token):] + \
                content[len("<think>\n"):] + "<｜end▁of▁sentence｜>"
            ids = tok(row["prompt"] + row["completion"])["input_ids"]
            assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id and ids[-1] == tok.eos_token_id
            continue
        # The trainer's rendering: the prompt, the record's text unchanged, the end of turn.
        full = tok.apply_chat_template(row["messages"], tokenize=False)
        end = {"qwen3": "<|im_end|>\n", "harmony": "<|return|>"}[name]
        assert full == tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) + content + end
        last = row["messages"][-1]
        if name == "harmony":
            assert set(last) == {"role", "content", "thinking"} and "<|" not in last["content"] + last["thinking"]
            assert fmt.assistant_content(last["thinking"], last["content"]) == content
        else:
            assert last == record["messages"][-1]


def test_r1_prompt_completion_is_what_trl_trains_on(tmp_path):
    """TRL's own SFTTrainer, the real R1-Distill template and tokenizer: the loss covers exactly the
    thinking, the answer and the end of turn; BOS once."""
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = r1_real()
    export_runs([write_run(tmp_path / "run", student_records("deepseek-r1", 2))], tmp_path / "out", tokenizer=tok,
                validation_fraction=0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    trainer = SFTTrainer(model=Qwen2ForCausalLM(config), processing_class=tok,
                         args=SFTConfig(output_dir=str(tmp_path / "sft"), report_to=[], max_length=None, bf16=False,
                                        use_cpu=True),
                         train_dataset=Dataset.from_list(rows(tmp_path / "out")))
    example = trainer.train_dataset[0]
    learned = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tok.decode(example["input_ids"]).startswith("<｜begin▁of▁sentence｜><｜User｜>What is 2 + 3?")
    assert tok.decode(example["input_ids"]).count("<｜begin▁of▁sentence｜>") == 1
    assert tok.decode(learned) == ("Okay, let me see. 0 + 0 is 0.\nWait, yes.\n</think>\n\nIt is **0**."
                                   "<｜end▁of▁sentence｜>")


@pytest.mark.parametrize("name,layout,field,why", [
    ("harmony", "messages", "content", "special token"),
    ("deepseek-r1", "messages", "content", "does not start with the prompt's"),
    ("deepseek-r1", "messages", "reasoning_content", "does not start with the prompt's"),
])
def test_layouts_the_template_does_not_train_on_are_dropped_with_the_reason(tmp_path, name, layout, field, why):
    result = export_runs([write_run(tmp_path / "run", student_records(name))], tmp_path / "out",
                         tokenizer=REAL[name](), validation_fraction=0, layout=layout, reasoning_field=field)
    assert result["kept"] == 0 and result["dropped"] == {"chat_template": 4}
    (kind, count), = result["template_problems"].items()
    assert count == 4 and why in kind
    line = result["notes"][0]
    assert line.startswith("--check-template dropped 4 rows: 4 because") and why in line and "\n" not in line
    stats = json.loads((tmp_path / "out" / "export.json").read_text())
    assert stats["dropped"] == {"chat_template": 4} and stats["template_problems"] == {kind: 4}


@pytest.mark.parametrize("name,layout,field", [
    *((name, "messages", field) for name in ("qwen3", "harmony") for field in ("reasoning_content", "thinking")),
    *((name, "prompt-completion", "auto") for name in ("qwen3", "deepseek-r1", "harmony"))])
def test_other_layouts_also_pass_where_the_template_reads_them(tmp_path, name, layout, field):
    # (transformers here passes either reasoning field to either template; R1-Distill's drops both.)
    result = export_runs([write_run(tmp_path / "run", student_records(name))], tmp_path / "out",
                         tokenizer=REAL[name](), validation_fraction=0, layout=layout, reasoning_field=field)
    assert result["kept"] == 4, result["template_problems"]
    if layout == "messages":
        assert field in rows(tmp_path / "out")[0]["messages"][-1]


def test_plain_student_passes_the_smollm2_template(tmp_path, smol_tokenizer):
    result = export_runs([write_run(tmp_path / "run", [make_record(f"p{i}") for i in range(3)])], tmp_path / "out",
                         tokenizer=smol_tokenizer, validation_fraction=0, reasoning_field="thinking")
    assert result["kept"] == 3 and rows(tmp_path / "out")[0]["messages"][-1].keys() == {"role", "content"}


def test_unfinished_thinking_cannot_be_put_apart(tmp_path):
    fmt = get_format("harmony")
    records = student_records("harmony", 2)
    records[1]["messages"][-1]["content"] = fmt.assistant_content("Okay, let me", "", thinking_done=False)
    records[1]["finish_reason"] = "length"
    run = write_run(tmp_path / "run", records)
    result = export_runs([run], tmp_path / "out", filters=Filters(finish_reasons=("stop", "length")),
                         validation_fraction=0)
    assert result["kept"] == 1 and result["dropped"] == {"thinking_unfinished": 1}
    # The raw text layout keeps it, as it was written.
    result = export_runs([run], tmp_path / "raw", filters=Filters(finish_reasons=("stop", "length")),
                         validation_fraction=0, reasoning_field="content")
    assert result["kept"] == 2


@pytest.mark.parametrize("to", ["parquet", "hf"])
def test_arrow_exports_carry_the_layout(tmp_path, to):
    from datasets import load_dataset, load_from_disk
    from trl.data_utils import apply_chat_template, is_conversational

    def load(folder):
        return load_from_disk(str(folder)) if to == "hf" else load_dataset(str(folder))

    export_runs([write_run(tmp_path / "h", student_records("harmony"))], tmp_path / "ho", to=to, validation_fraction=0)
    data = load(tmp_path / "ho")["train"]
    assert data.features["messages"].feature["thinking"].dtype == "string"
    example = data[0]
    assert is_conversational(example) and example["messages"][0]["thinking"] is None
    text = apply_chat_template({"messages": example["messages"]}, harmony_real())["text"]
    assert "<|channel|>analysis<|message|>" + example["messages"][-1]["thinking"] + "<|end|>" in text

    export_runs([write_run(tmp_path / "r", student_records("deepseek-r1"))], tmp_path / "ro", to=to,
                tokenizer=r1_real(), check_template=False, validation_fraction=0)
    data = load(tmp_path / "ro")["train"]
    assert {"prompt", "completion"} <= set(data.column_names) and "messages" not in data.column_names
    assert not is_conversational(data[0]) and data[0]["completion"].endswith("<｜end▁of▁sentence｜>")


def test_prompt_completion_without_the_tokenizer_uses_the_family_layout(tmp_path):
    # The records name a hub model that is not cached here: it is not fetched, R1's own layout is
    # used (the same text as its template renders; tests/test_formats.py), and the notes say so.
    import time

    started = time.monotonic()
    result = export_runs([write_run(tmp_path / "run", student_records("deepseek-r1", 2))], tmp_path / "out",
                         validation_fraction=0)
    assert time.monotonic() - started < 20  # no download retries
    assert result["kept"] == 2 and result["options"]["prompt_rendered_with"] == "tessy's own deepseek-r1 layout"
    assert any("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B' is not here" in note for note in result["notes"])
    with_tokenizer = export_runs([write_run(tmp_path / "run2", student_records("deepseek-r1", 2))], tmp_path / "o2",
                                 validation_fraction=0, tokenizer=r1_real(), check_template=False)
    assert with_tokenizer["options"]["prompt_rendered_with"] == "the student tokenizer's chat template"
    assert [r["prompt"] for r in rows(tmp_path / "out")] == [r["prompt"] for r in rows(tmp_path / "o2")]


def test_max_tokens_drops_rows_the_trainer_would_cut(tmp_path):
    tok = qwen3_real()
    records = student_records("qwen3", 3)
    records[2]["messages"][-1]["content"] = get_format("qwen3").assistant_content("Okay. " * 200, "It is 4.")
    lengths = []
    for record in records:
        length = rendered_length(tok, {"messages": record["messages"]}, get_format("qwen3"), "")
        # As the trainer counts it: the conversation through the template, tokenized.
        assert length == len(tok.apply_chat_template(record["messages"], tokenize=True, return_dict=True)["input_ids"])
        lengths.append(length)
    limit = max(lengths[:2])
    assert lengths[2] > limit
    result = export_runs([write_run(tmp_path / "run", records)], tmp_path / "out", tokenizer=tok,
                         filters=Filters(max_tokens=limit), check_template=False, validation_fraction=0)
    assert result["kept"] == 2 and result["dropped"] == {"max_tokens": 1}
    stats = json.loads((tmp_path / "out" / "export.json").read_text())
    assert stats["dropped"] == {"max_tokens": 1} and stats["filters"]["max_tokens"] == limit
    assert "| dropped: max_tokens | 1 |" in (tmp_path / "out" / "README.md").read_text()
    # Prompt-completion rows are counted as TRL tokenizes them (special tokens added: BOS).
    r1 = r1_real()
    row = {"prompt": "<｜User｜>Hi<｜Assistant｜><think>\n",
           "completion": "Hm.\n</think>\n\nHi.<｜end▁of▁sentence｜>"}
    assert rendered_length(r1, row, None, "") == len(r1(row["prompt"] + row["completion"])["input_ids"])
    with pytest.raises(ValueError, match="at least 1"):
        Filters(max_tokens=0)


def test_card_license_and_language(tmp_path, capsys):
    from huggingface_hub import DatasetCard

    from tessy.export.licenses import PLACEHOLDER_LICENSE, card_language, license_of

    assert license_of("openai/gpt-oss-120b") == license_of("Qwen/Qwen3-8B") == "apache-2.0"
    assert license_of("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "mit"
    assert license_of("gemma3-270m") == "gemma" and license_of("qwen2.5-coder-0.5b-instruct") == "apache-2.0"
    assert license_of("/ckpt/my-student") is None and license_of("Qwen/Qwen2.5-3B-Instruct") is None
    export_runs([write_run(tmp_path / "q", student_records("qwen3"))], tmp_path / "qo", validation_fraction=0)
    card = DatasetCard.load(tmp_path / "qo" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.language == ["en"]
    export_runs([write_run(tmp_path / "r", student_records("deepseek-r1"))], tmp_path / "ro", validation_fraction=0,
                tokenizer=r1_real(), check_template=False)
    assert DatasetCard.load(tmp_path / "ro" / "README.md").data.license == ["apache-2.0", "mit"]

    # A model tessy does not know: a placeholder, and the command says so.
    records = student_records("qwen3", 2, teacher="/ckpt/my-teacher")
    assert main(["export", str(write_run(tmp_path / "u", records)), "-o", str(tmp_path / "uo")]) == 0
    out = capsys.readouterr().out
    assert "license is a placeholder" in out and "/ckpt/my-teacher" in out
    card = DatasetCard.load(tmp_path / "uo" / "README.md")
    assert card.data.license == PLACEHOLDER_LICENSE and "**to fill in**" in card.text
    assert main(["export", str(tmp_path / "u"), "-o", str(tmp_path / "uo2"), "--license", "cc-by-4.0",
                 "--language", "en,de"]) == 0
    assert "placeholder" not in capsys.readouterr().out
    card = DatasetCard.load(tmp_path / "uo2" / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.language == ["en", "de"]
    assert card_language(["Это ответ на вопрос о сложении чисел " * 5])[1] is True


def test_cli_layout_options_and_one_line_reason(tmp_path, capsys):
    folder = tmp_path / "harmony-tokenizer"
    harmony_real().save_pretrained(folder)
    run = write_run(tmp_path / "run", student_records("harmony"))
    assert main(["export", str(run), "-o", str(tmp_path / "a"), "--check-template", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "exported 4 of 4 records (train 4) as messages (layout messages, thinking in thinking)" in out
    assert main(["export", str(run), "-o", str(tmp_path / "b"), "--tokenizer", str(folder), "--check-template",
                 "--reasoning-field", "content"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "--check-template dropped" in line]
    assert len(lines) == 1 and "4 because the assistant turn contains a special token" in lines[0]
    assert "--reasoning-field thinking" in lines[0]
    assert main(["export", str(run), "-o", str(tmp_path / "c"), "--tokenizer", str(folder), "--max-tokens", "5"]) == 0
    assert "dropped: max_tokens 4" in capsys.readouterr().out


def test_no_datasets_progress_bars_in_export_output(tmp_path, capfd):
    import datasets

    run = write_run(tmp_path / "run", [make_record(f"q{i}") for i in range(5)])
    assert not datasets.are_progress_bars_disabled()
    assert main(["export", str(run), "--to", "hf", "-o", str(tmp_path / "hf")]) == 0
    captured = capfd.readouterr()
    assert "Saving the dataset" not in captured.out + captured.err and "%|" not in captured.out + captured.err
    assert captured.out.count("\n") == captured.out.count("tessy export:") + 1  # notes, then the summary line
    assert not datasets.are_progress_bars_disabled()  # restored
