"""The predictor pipeline without real model weights: sampling keeps only thinking text,
annotation parses and locates answers robustly (scripted annotators), training resumes exactly
and saves a checkpoint the engine loads with no flags, evaluation compares predictors, and a
paper-shaped checkpoint (Qwen3 + token-classification head, no tessy keys) drives synthesize."""

from __future__ import annotations

import asyncio
import json

import pytest

from tessy.predictor_training.annotate import LexiconAnnotator, ScriptedAnnotator, annotate
from tessy.predictor_training.config import AnnotateConfig, EvalConfig, SampleConfig, TrainConfig
from tessy.predictor_training.spans import AnswerError, locate_spans, parse_answer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- annotate: parsing and locating ---------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ('["Okay,", "so"]', ["Okay,", "so"]),
    ('```json\n["Wait,"]\n```', ["Wait,"]),
    ('Sure! Here are the spans:\n["Hmm", "let me see"]\nHope this helps.', ["Hmm", "let me see"]),
    ("['Well,', \"I think\"]", ["Well,", "I think"]),
    ('{"spans": ["So,"]}', ["So,"]),
    ('["a", "b",]', ["a", "b"]),
    ('[1, "ok", null]', ["ok"]),
    ("There is none: []", []),
])
def test_parse_answer_is_tolerant(raw, expected):
    assert parse_answer(raw) == expected


@pytest.mark.parametrize("raw", ["", "no spans here", "[unclosed", '{"a": 1}'])
def test_parse_answer_refuses_answers_without_an_array(raw):
    with pytest.raises(AnswerError):
        parse_answer(raw)


def test_locate_spans_in_order_word_bounded_and_whitespace_tolerant():
    text = "Okay, so we also need x. So, let me  check: so 3 it’s fine."
    spans, missing = locate_spans(text, ["Okay, so", "so", "let me check", "it's", "not there", "So,"])
    found = [text[a:b] for a, b in spans]
    assert found == ["Okay, so", "So,", "let me  check", "so", "it’s"]  # "so" not inside "also"
    assert missing == ["not there"]
    # a phrase listed twice is found twice, in order
    spans, missing = locate_spans("Wait, x. Wait, y.", ["Wait,", "Wait,"])
    assert spans == [(0, 5), (9, 14)] and not missing


def _segments(tmp_path, texts):
    rows = [{"segment_id": f"student/s{i}/0", "source_id": f"s{i}", "model": "m", "role": "student",
             "tokenizer": "smollm2-135m-instruct", "text": text, "tokens": 10, "start_char": 0}
            for i, text in enumerate(texts)]
    return write_jsonl(tmp_path / "segments.jsonl", rows)


def test_annotate_retries_bad_answers_records_failures_and_resumes(tmp_path):
    seg = _segments(tmp_path, ["Okay, so x = 3.", "Hmm, y is 4.", "Wait,  let me see: z = 5.", "x = 1."])

    def answers(text, call):
        if text.startswith("Okay"):
            return "I cannot answer that" if call <= 2 else '["Okay, so"]'  # bad, then good
        if text.startswith("Hmm"):
            return '["something else entirely"]'  # never occurs: retried, then failed
        if text.startswith("Wait"):
            return '```json\n["Wait, let me see", "invented phrase"]\n```'  # whitespace differs
        raise ConnectionError("server went away")  # an annotator error is retried too

    out = tmp_path / "ann"
    config = AnnotateConfig(input=str(seg), output=str(out), max_attempts=3, concurrency=1, progress=False)
    report = annotate(config, ScriptedAnnotator(answers))
    assert (report.written, report.failed) == (2, 2)
    records = {r["id"]: r for r in read_jsonl(out / "records.jsonl")}
    okay = records["student/s0/0"]
    assert okay["spans"] == [[0, 8]] and okay["attempts"] == 3 and okay["prompt_version"]
    wait = records["student/s2/0"]
    assert wait["span_texts"] == ["Wait,  let me see"] and wait["not_found"] == 1
    assert wait["not_found_texts"] == ["invented phrase"] and wait["annotator"] == "scripted"
    failures = {f["id"]: f for f in read_jsonl(out / "failures.jsonl")}
    assert "none of the 1 phrases occur" in failures["student/s1/0"]["reason"]
    assert "ConnectionError" in failures["student/s3/0"]["reason"]

    # Rerun: done segments are skipped, failed ones retried; nothing is written twice.
    report = annotate(config, ScriptedAnnotator(lambda text, call: "[]"))
    assert (report.written, report.skipped_done, report.failed) == (2, 2, 0)
    ids = [r["id"] for r in read_jsonl(out / "records.jsonl")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
    # Another annotator (another fingerprint) does not mix into the same folder.
    with pytest.raises(RuntimeError, match="another config"):
        annotate(config, LexiconAnnotator())


def test_lexicon_annotator_marks_what_the_lexicon_finds(tmp_path):
    from tessy.predictors.lexicon import find_style_spans

    text = "Okay, so let me think. The sum is 7. Wait, but how? Let's check: 3 + 4 = 7."
    seg = _segments(tmp_path, [text])
    annotate(AnnotateConfig(input=str(seg), output=str(tmp_path / "ann"), progress=False))
    (record,) = read_jsonl(tmp_path / "ann" / "records.jsonl")
    assert [tuple(s) for s in record["spans"]] == find_style_spans(text)
    assert record["annotator"] == "lexicon" and record["not_found"] == 0


def test_llm_annotator_over_a_backend(smol_tokenizer):
    """The llm annotator renders the prompt in the model's format and reads the answer back."""
    from tessy.backends.fake import ScriptedBackend
    from tessy.engine import Party
    from tessy.formats import get_format
    from tessy.predictor_training.annotate import LLMAnnotator, annotate_segment

    backend = ScriptedBackend(smol_tokenizer, 'Here: ["Okay, so"]', "annotator-llm")
    party = Party("annotator", backend, get_format("plain", smol_tokenizer), None)
    segment = {"segment_id": "x", "text": "Okay, so x = 3."}
    outcome = asyncio.run(annotate_segment(LLMAnnotator(party), segment))
    assert outcome.ok and outcome.record["spans"] == [[0, 8]]
    assert outcome.record["annotator"] == "llm" and outcome.record["annotator_model"] == "annotator-llm"


# -- sample -----------------------------------------------------------------------------------

THINKING = ("Okay, so the task is to add two numbers. Let me think about the inputs first. "
            "We take a and b, and we return their sum. Wait, what about negative numbers? "
            "They work the same way, so nothing changes. Hmm, maybe floats too. ")
ANSWER = "SECRET-ANSWER: def add(a, b): return a + b"


def test_sample_cuts_only_thinking_text(tmp_path, qwen3_tokenizer):
    from tessy.backends.fake import ScriptedBackend
    from tessy.engine import Party
    from tessy.formats import get_format
    from tessy.predictor_training.sample import sample

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"Add {i} and 2."} for i in range(3)])
    script = THINKING * 2 + "</think>\n\n" + ANSWER
    config = SampleConfig(input=str(prompts), output=str(tmp_path / "s"), role="teacher", segments_per_response=3,
                          min_segment_tokens=8, max_segment_tokens=16, max_new_tokens=400, progress=False)

    def party():
        return Party("teacher", ScriptedBackend(qwen3_tokenizer, script, "qwen3-test"), get_format("qwen3"), None)

    report = sample(config, party())
    assert (report.responses, report.written, report.segments) == (3, 3, 9)
    segments = read_jsonl(tmp_path / "s" / "segments.jsonl")
    for seg in segments:
        assert "SECRET" not in seg["text"] and "think>" not in seg["text"]
        assert seg["role"] == "teacher" and seg["model"] == "qwen3-test" and seg["text"] in THINKING * 2
        assert 8 <= seg["tokens"] <= 16
        assert len(qwen3_tokenizer.encode(seg["text"], add_special_tokens=False)) <= 17
    assert len({s["segment_id"] for s in segments}) == 9
    # Rerun: nothing is generated again and the same segments are cut.
    again = sample(config, party())
    assert again.written == 0 and read_jsonl(tmp_path / "s" / "segments.jsonl") == segments


def test_sample_plain_format_counts_the_whole_response(tmp_path, smol_tokenizer):
    from tessy.backends.fake import ScriptedBackend
    from tessy.engine import Party
    from tessy.predictor_training.sample import sample
    from tests.test_engine import PlainTestFormat

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p", "prompt": "Add."}])
    party = Party("student", ScriptedBackend(smol_tokenizer, THINKING, "smol"), PlainTestFormat(), None)
    config = SampleConfig(input=str(prompts), output=str(tmp_path / "s"), segments_per_response=2,
                          min_segment_tokens=6, max_segment_tokens=10, progress=False)
    report = sample(config, party)
    assert report.segments == 2
    assert all(s["text"] in THINKING for s in read_jsonl(tmp_path / "s" / "segments.jsonl"))


# -- train and eval on a tiny model ----------------------------------------------------------------

TEXTS = [
    "Okay, so we need to compute the sum. The sum of 3 and 4 is 7.",
    "Wait, let me check that again. 3 + 4 = 7, which is correct.",
    "Hmm, the list is sorted. We return the first element of it.",
    "So, the loop runs n times. Each step adds one to the counter.",
    "Let me think. The function returns True when x is even.",
    "Alright, now the edge case: an empty list returns an empty list.",
]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """Lexicon annotations of small student and teacher segments (many responses each)."""
    root = tmp_path_factory.mktemp("annotated")
    rows = []
    for i in range(24):
        role = ("student", "teacher")[i % 2]
        rows.append({"segment_id": f"{role}/r{i}/0", "source_id": f"r{i}", "model": "smollm2-135m-instruct",
                     "role": role, "tokenizer": "smollm2-135m-instruct", "text": TEXTS[i % len(TEXTS)] + " " + TEXTS[(i + 1) % len(TEXTS)],
                     "tokens": 30, "start_char": 0})
    seg = write_jsonl(root / "segments.jsonl", rows)
    annotate(AnnotateConfig(input=str(seg), output=str(root / "ann"), progress=False))
    return str(root / "ann")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, smol_tokenizer):
    """A 2-layer causal LM with SmolLM2's tokenizer: a stand-in base model."""
    import torch
    import transformers as tf

    path = tmp_path_factory.mktemp("base") / "tiny"
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    tf.LlamaForCausalLM(config).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


def _train_config(annotated, base, out, **kw):
    return TrainConfig(data=annotated, output=str(out), base_model=base, batch_size=4, learning_rate=1e-3,
                       save_every=2, progress=False, **kw)


@pytest.mark.slow
def test_train_saves_a_checkpoint_the_engine_loads_and_resumes_exactly(annotated, tiny_base, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from tessy.predictors import load_predictor
    from tessy.predictor_training import train as train_module

    report = train_module.train(_train_config(annotated, tiny_base, tmp_path / "straight", max_steps=4))
    assert report.steps == 4 and report.segments["train"] > 0
    folder = tmp_path / "straight"
    config = json.loads((folder / "config.json").read_text())
    assert config["tessy_style_label_id"] == 1 and config["tessy_label_offset"] == 0
    assert config["id2label"] == {"0": "capability", "1": "style"}
    assert not (folder / "checkpoint-last").exists()
    log = read_jsonl(folder / "train_log.jsonl")
    assert log and all(row["loss"] > 0 for row in log)
    predictor = load_predictor(str(folder))
    assert (predictor.style_label_id, predictor.label_offset) == (1, 0)
    asyncio.run(predictor.aclose())
    assert train_module.train(_train_config(annotated, tiny_base, folder, max_steps=4)).already_done

    # A crash after the step-2 checkpoint, then a rerun: it resumes at step 2 and ends where an
    # uninterrupted run ends.
    real_collate, calls = train_module._collate, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(train_module, "_collate", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(_train_config(annotated, tiny_base, tmp_path / "resumed", max_steps=4))
    assert (tmp_path / "resumed" / "checkpoint-last").exists()
    monkeypatch.setattr(train_module, "_collate", real_collate)
    report = train_module.train(_train_config(annotated, tiny_base, tmp_path / "resumed", max_steps=4))
    assert report.resumed_from == 2 and report.steps == 4
    a, b = load_file(folder / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # Another config in the same folder is refused.
    with pytest.raises(RuntimeError, match="another config"):
        train_module.train(_train_config(annotated, tiny_base, folder, max_steps=5))


@pytest.mark.slow
def test_eval_compares_predictors(annotated, tiny_base, tmp_path):
    from tessy.predictor_training.evaluate import evaluate, format_table
    from tessy.predictor_training.train import train

    train(_train_config(annotated, tiny_base, tmp_path / "p", max_steps=2))
    out = tmp_path / "eval.json"
    results = evaluate(EvalConfig(data=annotated, predictors=f"lexicon,chance,tiny={tmp_path / 'p'}", split="all",
                                  starts_per_segment=4, output=str(out)))
    assert set(results["predictors"]) == {"lexicon", "chance", "tiny"}
    assert json.loads(out.read_text())["segments"] == 24
    lexicon = results["predictors"]["lexicon"]
    assert lexicon["token"]["f1"] > 0.95  # the annotator was the lexicon itself
    for scores in results["predictors"].values():
        assert set(scores["boundary"]) == {"student", "teacher"}
        assert all(row["spans"] == 48 and 0 <= row["exact"] <= row["near"] <= 48 for row in scores["boundary"].values())
    table = format_table(results)
    assert "student exact" in table and "tiny" in table.splitlines()[4]
    # held-out split: only responses that train never saw
    test_only = evaluate(EvalConfig(data=annotated, predictors="lexicon", split="test"))
    assert 0 < test_only["segments"] < 24


# -- the paper's published predictor shape ---------------------------------------------------------


@pytest.mark.slow
def test_paper_shaped_predictor_drives_synthesize(tmp_path, smol_tokenizer, gemma_tokenizer):
    """Qwen3ForTokenClassification, no tessy keys in its config (label at i describes i+1): the
    runner uses it as both sides' predictor, unchanged, and cuts where it says."""
    from tessy.backends.fake import ScriptedBackend
    from tessy.config import SynthesizeConfig
    from tessy.engine import Party
    from tessy.predictors import load_predictor
    from tessy.runner import build_engine, synthesize
    from tests.test_engine import PlainTestFormat
    from tests.test_predictors import build_checkpoint

    folder = build_checkpoint(tmp_path / "paper", smol_tokenizer, arch="qwen3")
    config = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForTokenClassification"] and "tessy_label_offset" not in config
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "prompt": "3+4?"}])
    fmt = PlainTestFormat()
    student = Party("student", ScriptedBackend(smol_tokenizer, "Wait, so we add. Wait, it is seven.", "student"),
                    fmt, load_predictor(folder), k=6, predictor_name=folder)
    teacher = Party("teacher", ScriptedBackend(gemma_tokenizer, "Three plus four is seven. Wait, done.", "teacher"),
                    fmt, load_predictor(folder), k=6, predictor_name=folder)
    run_config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "run"), progress=False, max_tokens=60)
    report = synthesize(run_config, engine=build_engine(run_config, {"student": student, "teacher": teacher}))
    assert report.written == 1 and report.failed == 0
    (record,) = read_jsonl(tmp_path / "run" / "records.jsonl")
    roles = [span["role"] for span in record["spans"]]
    assert "teacher" in roles and "student" in roles  # the predictor's verdicts made the hand-overs
    # each predictor read on from what it read of the sample, and forgot it when the sample ended
    assert student.predictor.reads_on and teacher.predictor.reads_on
    assert student.predictor.reader.kept_bytes == teacher.predictor.reader.kept_bytes == 0
    assert record["models"]["student"]["predictor"] == folder
