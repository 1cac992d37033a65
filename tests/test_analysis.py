"""`tessy analyze`: figures from hand-made records (exact numbers), the report folder, the CLI,
the sparse TF-IDF and PCA against their dense formulas, records streamed from the files, and the
student NLL scorer on a tiny random model (batched = one at a time = chunked = by hand)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tessy.analysis import analyze
from tessy.analysis.figures import compute
from tessy.analysis.load import Row, align, iter_records, load_runs
from tessy.analysis.report import summary_table, write_report
from tessy.analysis.text import pca_2d, tfidf, top_words, words


def record(sample_id, method, spans, prompt="Add the numbers."):
    spans = [{"role": role, "section": section, "text": text, "tokens_student": tokens, "tokens_own": tokens,
              "generated": tokens, "discarded": 0, "forced": False} for role, section, text, tokens in spans]
    total = sum(s["tokens_student"] for s in spans)
    teacher = sum(s["tokens_student"] for s in spans if s["role"] == "teacher")
    return {"id": sample_id, "method": method,
            "messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": "".join(s["text"] for s in spans)}],
            "spans": spans,
            "totals": {"spans": len(spans), "tokens_student": total, "teacher_tokens_student": teacher,
                       "teacher_share": teacher / total if total else 0.0, "thinking_teacher_share": None,
                       "generated": total, "discarded": 0, "steps": 1},
            "finish_reason": "stop", "timings": {"wall_s": 1.0, "predict_s": 0.0, "generate_s": {}},
            "models": {"student": {"model": "smollm2-135m-instruct", "format": "plain", "predictor": None}},
            "config_fingerprint": "x", "tessy_version": "0"}


STUDENT = ["Okay so we add two and three to get five.", "Okay so the loop sums the list.",
           "Okay so we sort the numbers first.", "Okay so we return the maximum."]
TEACHER = ["Compute 2 + 3 = 5 directly.", "Iterate; accumulate the total.", "Sort ascending, then scan.",
           "Return max(values)."]


def write_runs(tmp_path):
    runs = {
        "student-only": [record(f"q{i}", "student-only", [("student", "response", t, 10)]) for i, t in enumerate(STUDENT)],
        "teacher-only": [record(f"q{i}", "teacher-only", [("teacher", "response", t, 8)]) for i, t in enumerate(TEACHER)],
        "tessy": [record(f"q{i}", "tessy", [("student", "response", "Okay so ", 2), ("teacher", "response", t, 6)])
                  for i, t in enumerate(TEACHER)]
        + [record("extra", "tessy", [("student", "response", "Only here.", 3)])],
    }
    folders = []
    for method, records in runs.items():
        folder = tmp_path / method
        folder.mkdir()
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        folders.append(folder)
    return folders


def test_figures_from_records(tmp_path):
    groups = load_runs(write_runs(tmp_path))
    assert align(groups) == ["q0", "q1", "q2", "q3"]  # "extra" is not shared by every method
    figures = compute(groups)
    assert figures["methods"] == ["student-only", "teacher-only", "tessy"]
    assert figures["teacher_share"]["tessy"]["token_weighted"] == pytest.approx(24 / 32)
    assert figures["teacher_share"]["teacher-only"]["token_weighted"] == 1.0
    assert figures["lengths"]["student-only"]["response"]["mean"] == 10.0
    assert figures["lengths"]["tessy"]["total"]["values"] == [8.0] * 4
    to_student = figures["similarity"]["to_student_only"]
    assert set(to_student) == {"teacher-only", "tessy"}
    # TESSY shares "okay so" with the student: closer to it than the teacher.
    assert to_student["tessy"]["mean"] > to_student["teacher-only"]["mean"]
    matrix = figures["similarity"]["matrix"]["values"]
    assert matrix[0][0] == pytest.approx(1.0) and matrix[1][2] == pytest.approx(matrix[2][1])
    assert len(figures["pca"]["points"]) == 12 and set(figures["pca"]["centroids"]) == set(figures["methods"])
    assert figures["top_words"]["student-only"][0][0] == "okay"
    assert figures["student_nll"] is None


def test_text_helpers():
    matrix, vocab = tfidf(["a b b", "a c", ""])
    dense = matrix.toarray()  # the matrix is sparse (scipy CSR) now, float32
    assert np.allclose(np.linalg.norm(dense[:2], axis=1), 1.0) and not dense[2].any()
    assert vocab == ["a", "b", "c"]
    points, ratios = pca_2d(np.eye(4))
    assert points.shape == (4, 2) and 0 <= sum(ratios) <= 1.0 + 1e-9
    assert top_words(["the cat and the cat", "dog"], 2) == [("cat", pytest.approx(2000 / 6)), ("dog", pytest.approx(1000 / 6))]


def random_texts(n=200, vocabulary=300, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, vocabulary, rng.integers(0, 60))) for _ in range(n)]


def test_sparse_tfidf_is_the_dense_formula():
    texts = random_texts()
    matrix, vocab = tfidf(texts)
    index = {word: j for j, word in enumerate(vocab)}
    counts = np.zeros((len(texts), len(vocab)))
    for r, text in enumerate(texts):
        for word in words(text):
            counts[r, index[word]] += 1
    dense = counts * (np.log((1 + len(texts)) / (1 + (counts > 0).sum(axis=0))) + 1)
    dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-300)
    assert vocab == sorted(vocab) and matrix.dtype == np.float32
    assert np.allclose(matrix.toarray(), dense, atol=1e-6)
    # Capped: the most frequent words are kept (ties alphabetical), each row renormalised over them.
    capped, kept = tfidf(texts, max_features=50)
    totals = counts.sum(axis=0)
    assert kept == sorted(sorted(vocab, key=lambda w: (-totals[index[w]], w))[:50]) and capped.shape == (200, 50)
    norms = np.linalg.norm(capped.toarray(), axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-6)


def test_cli_defaults_are_the_library_ones():
    from tessy.analysis import nll, text
    from tessy.cli import analyze as cli

    assert cli.MAX_FEATURES == text.MAX_FEATURES and cli.DEVICES == nll.DEVICES


def test_sparse_pca_is_the_dense_pca():
    matrix, _ = tfidf(random_texts(n=300, vocabulary=80, seed=1))
    dense_points, dense_ratios = pca_2d(matrix.toarray())  # LAPACK SVD of the centred matrix
    sparse_points, sparse_ratios = pca_2d(matrix, dense_cells=0)  # ARPACK, centred implicitly
    assert np.allclose(sparse_ratios, dense_ratios, rtol=1e-4) and sparse_ratios[0] >= sparse_ratios[1] > 0
    assert np.allclose(sparse_points, dense_points, atol=1e-4)


def test_records_are_streamed_not_kept(tmp_path):
    folders = write_runs(tmp_path)
    path = folders[0] / "records.jsonl"  # q1 written again (a rerun): the later line counts
    again = record("q1", "student-only", [("student", "response", "Rewritten answer.", 3)])
    path.write_text(path.read_text() + json.dumps(again) + "\n")
    groups = load_runs(folders)
    assert all(type(row) is Row for group in groups for row in group.rows.values())
    assert groups[0].rows["q1"].tokens == 3 and groups[0].models["student"]["model"] == "smollm2-135m-instruct"
    align(groups)
    seen = [(g, record_id, rec["messages"][-1]["content"]) for g, record_id, rec in iter_records(groups)]
    assert len(seen) == 12 and (0, "q1", "Rewritten answer.") in seen
    assert not any(record_id == "extra" for _, record_id, _ in seen)
    assert compute(groups)["lengths"]["student-only"]["response"]["values"] == [10.0, 3.0, 10.0, 10.0]


@pytest.mark.slow
def test_report_folder_and_cli(tmp_path, capsys):
    from tessy.cli.main import main

    folders = write_runs(tmp_path)
    out = tmp_path / "report"
    assert main(["analyze", *map(str, folders), "-o", str(out), "--no-nll"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "tessy" in printed and "teacher share" in printed and "75.0%" in printed
    assert "reading responses" in captured.err and "12/12" in captured.err  # the progress bar, on stderr
    for name in ("teacher_share", "lengths", "similarity", "pca", "top_words"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}.png"' in (out / "report.html").read_text()
    data = json.loads((out / "analysis.json").read_text())
    assert data["prompts"] == {"student-only": 4, "teacher-only": 4, "tessy": 4}


@pytest.mark.slow
def test_same_method_twice_is_labelled_by_folder(tmp_path):
    folders = write_runs(tmp_path)
    copy = tmp_path / "again"
    copy.mkdir()
    (copy / "records.jsonl").write_text((folders[2] / "records.jsonl").read_text())
    labels = [g.label for g in load_runs([folders[2], copy])]
    assert labels == ["tessy (tessy)", "tessy (again)"]
    figures = compute(load_runs(folders))
    assert "student-only" in summary_table(figures)
    write_report(figures, tmp_path / "r2")


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory, smol_tokenizer):
    """A randomly initialised 2-layer Llama with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    folder = tmp_path_factory.mktemp("tiny-student")
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_student_nll_is_batch_invariant_and_exact(tiny_student):
    import torch

    from tessy.analysis.nll import StudentScorer

    records = [record(f"q{i}", "student-only", [("student", "response", text, 1)], prompt=f"Question {'x ' * i}?")
               for i, text in enumerate(STUDENT + TEACHER)]
    batched = StudentScorer(tiny_student, chat_format="plain", batch_size=8).score(records)
    single = StudentScorer(tiny_student, chat_format="plain", batch_size=1).score(records)
    assert [s.tokens for s in batched] == [s.tokens for s in single]
    for a, b in zip(batched, single):
        assert a.mean == pytest.approx(b.mean, abs=1e-4)

    class Bar:
        n = 0

        def update(self, count):
            self.n += count

    bar = Bar()  # a stream, 3 records encoded at a time, 2 per forward: the same scores, every one counted
    chunked = StudentScorer(tiny_student, chat_format="plain", batch_size=2, chunk=3).score(iter(records), progress=bar)
    assert bar.n == len(records) and [s.tokens for s in chunked] == [s.tokens for s in single]
    for a, b in zip(chunked, single):
        assert a.mean == pytest.approx(b.mean, abs=1e-4)
    # By hand, for the first record: full forward, no padding.
    scorer = StudentScorer(tiny_student, chat_format="plain")
    prompt, response, _ = scorer.encode(records[0])
    with torch.no_grad():
        logits = scorer.model(torch.tensor([prompt + response])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    expected = -sum(logprobs[len(prompt) + j - 1, token].item() for j, token in enumerate(response)) / len(response)
    assert batched[0].mean == pytest.approx(expected, abs=1e-4) and math.isfinite(expected)


@pytest.mark.slow
def test_analyze_with_nll(tmp_path, tiny_student):
    figures = analyze(write_runs(tmp_path), tmp_path / "out", student=tiny_student, student_format="plain")
    nll = figures["student_nll"]
    assert set(nll) == {"student-only", "teacher-only", "tessy"} and all(v["n"] == 4 for v in nll.values())
    assert all(v["ids"] == ["q0", "q1", "q2", "q3"] for v in nll.values())
    assert (tmp_path / "out" / "student_nll.png").exists()
    # --device auto (the default) is cuda when torch sees one, else cpu.
    import torch

    assert figures["student_device"] == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.slow
def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path, tiny_student, capsys):
    import torch

    from tessy.cli.main import EXIT_ERROR, main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    folders = write_runs(tmp_path)
    code = main(["analyze", *map(str, folders), "-o", str(tmp_path / "r"), "--student", tiny_student,
                 "--student-format", "plain", "--device", "cuda", "--no-progress"])
    assert code == EXIT_ERROR and "torch sees no CUDA device" in capsys.readouterr().err
