"""The report of examples/table1.py: OUT/table1.json (every figure), OUT/table1.md and OUT/table1.png.

What it owns: reading the finished stages' files (the data and its verdicts, the exports, the
fine-tunes' metrics, the evaluation) into one result, and the statistics on it: the exact McNemar
test of each student against the teacher-only one, the style-phrase rate of the answers, and the
data's diagnosis (`diagnose_data`): where each method's training data gets the problem right or
loses it, from the records alone. It promises to read only, never to change a stage's files, so
the report can be written again at any time (examples/table1.py writes it on every run).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path

from tessy import durable

METHODS = ("student-only", "teacher-only", "tessy")
STUDENTS = ("base",) + METHODS
VERIFIER = "reasoning-gym"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar (sign) test on the discordant problems."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(ours: dict[str, bool], theirs: dict[str, bool]) -> dict:
    """Problems `ours` gets right and `theirs` not (gained), the other way (lost), and the p-value."""
    ids = ours.keys() & theirs.keys()
    gained = sum(ours[i] and not theirs[i] for i in ids)
    lost = sum(theirs[i] and not ours[i] for i in ids)
    return {"gained": gained, "lost": lost, "p": mcnemar_p(gained, lost)}


def style_rate(texts: list[str]) -> float:
    """The lexicon's style phrases per 100 words."""
    from tessy.predictors.lexicon import find_style_spans

    words = sum(len(t.split()) for t in texts)
    return 100 * sum(len(find_style_spans(t)) for t in texts) / words if words else 0.0


def passes(folder: Path) -> dict[str, bool]:
    """Each record's verdict in `folder`: passed or not, by id."""
    return {v["id"]: v["status"] == "pass" for v in read_jsonl(folder / f"verdicts-{VERIFIER}.jsonl")}


# ---------------------------------------------------------------------------- the data


def data_summary(out: Path, method: str) -> dict:
    from tessy.cli.demo import summarize

    records = read_jsonl(out / "data" / method / "records.jsonl")
    export = json.loads((out / "sft-data" / method / "export.json").read_text())
    shown = summarize(records)  # teacher share, samples in which both wrote in one section, endings
    return {"records": len(records), "teacher_share": shown["teacher_share"], "both_wrote": shown["took_turns"],
            "section": shown["section"], "finish_reasons": shown["finish_reasons"],
            "correct": sum(passes(out / "data" / method).values()),
            "rows_kept": export["kept"], "dropped": export["dropped"]}


def last_number(text: str) -> str | None:
    """The last number written in `text` (thousands separators dropped), or None."""
    numbers = re.findall(r"\d[\d,]*", text)
    return numbers[-1].replace(",", "") if numbers else None


def diagnose_data(records: list[dict], verdicts: list[dict], teacher_only: dict[str, bool]) -> dict:
    """Where a method's data gets the problem right or loses it, from its records.

    `thinking_right`: records whose thinking ends on the expected answer (its last number);
    `answer_lost`: of those, the ones whose final answer still fails (the answer section lost it);
    `answer_rescued`: the opposite. With the teacher-only data on the same prompts: the paired
    comparison, and the pass rates of both grouped by how many student spans the record's
    thinking holds (how often the student took a turn), by whether a span was forced (hand-overs
    went empty until one model had to keep a word: `forced` in the record), and by the student's
    first word there."""
    verdict = {v["id"]: v for v in verdicts}
    by_spans: dict[int, list[int]] = {}
    by_forced = {"none": [0, 0, 0], "student": [0, 0, 0], "teacher": [0, 0, 0]}
    by_opening: Counter = Counter()
    opening_passed: Counter = Counter()
    thinking_right = answer_lost = answer_rescued = 0
    for record in records:
        judged = verdict.get(record["id"])
        if judged is None:
            continue
        passed = judged["status"] == "pass"
        thinking = "".join(s["text"] for s in record["spans"] if s["section"] == "thinking")
        right = judged.get("expected") is not None and last_number(thinking) == str(judged["expected"])
        thinking_right += right
        answer_lost += right and not passed
        answer_rescued += passed and not right
        student = [s["text"] for s in record["spans"]
                   if s["role"] == "student" and s["section"] == "thinking" and s["text"].strip()]
        forced = {s["role"] for s in record["spans"] if s.get("forced")}
        for group in (by_spans.setdefault(min(len(student), 4), [0, 0, 0]),
                      by_forced["student" if "student" in forced else "teacher" if forced else "none"]):
            group[0] += 1
            group[1] += passed
            group[2] += teacher_only.get(record["id"], False)
        if student:
            word = student[0].split()[0]
            by_opening[word] += 1
            opening_passed[word] += passed
    ours = {v["id"]: v["status"] == "pass" for v in verdicts}
    return {
        "thinking_right": thinking_right, "answer_lost": answer_lost, "answer_rescued": answer_rescued,
        "vs_teacher_only": paired(ours, teacher_only),
        # student spans in the thinking (4 means 4 or more) -> [records, passed, teacher-only passed]
        "by_student_spans": {str(k): v for k, v in sorted(by_spans.items())},
        # a forced span of the student's (or, with none of those, of the teacher's) -> the same three
        "by_forced_span": by_forced,
        "by_student_opening": {w: [n, opening_passed[w]] for w, n in by_opening.most_common(6)},
    }


# ---------------------------------------------------------------------------- the report


def report(size: dict, out: Path, stages: dict) -> dict:
    """Write OUT/table1.json, .md and .png from the finished stages; returns the result."""
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    passed = {name: passes(out / "eval" / name) for name in STUDENTS}
    rows = []
    for entry in evaluation["rows"]:
        name = entry["model"]
        answers = read_jsonl(out / "eval" / name / "records.jsonl")
        row = {"student": name, "problems": entry["problems"], "passed": entry["passed"],
               "accuracy": entry["accuracy"],
               "accuracy_se": math.sqrt(entry["accuracy"] * (1 - entry["accuracy"]) / entry["problems"]),
               "own_nll": entry.get("own_nll", {}).get("nll_per_token"),
               "style_per_100_words": style_rate([a["messages"][-1]["content"] for a in answers])}
        if name != "teacher-only":
            row["vs_teacher_only"] = paired(passed[name], passed["teacher-only"])
        if name != "base":
            versus = paired(passed[name], passed["base"])
            row["vs_base"] = {"gained": versus["gained"], "lost": versus["lost"]}
            row["sft"] = {k: v for k, v in json.loads((out / "sft" / name / "metrics.json").read_text()).items()
                          if k in ("train_rows", "steps", "train_loss", "train_seconds")}
        rows.append(row)
    teacher_only = passes(out / "data" / "teacher-only")
    diagnosis = {m: diagnose_data(read_jsonl(out / "data" / m / "records.jsonl"),
                                  read_jsonl(out / "data" / m / f"verdicts-{VERIFIER}.jsonl"), teacher_only)
                 for m in METHODS}
    result = {"size": size, "date": time.strftime("%Y-%m-%d"),
              "data": {m: data_summary(out, m) for m in METHODS}, "data_diagnosis": diagnosis, "students": rows,
              "own_responses": len(read_jsonl(out / "own" / "records.jsonl")), "stages": stages}
    durable.write_atomic(out / "table1.json", json.dumps(result, indent=2) + "\n")
    durable.write_atomic(out / "table1.md", markdown(result))
    plot(result, out / "table1.png")
    return result


def markdown(result: dict) -> str:
    data = result["data"]
    lines = ["| student (SFT data) | rows trained on | held-out accuracy (± s.e.) "
             "| vs teacher-only: gained / lost (p) | NLL / token of base's own responses "
             "| style phrases / 100 words |", "|---|---|---|---|---|---|"]
    for row in result["students"]:
        trained = row["sft"]["train_rows"] if "sft" in row else "–"
        versus = row.get("vs_teacher_only")
        versus = f"{versus['gained']} / {versus['lost']} (p = {versus['p']:.2g})" if versus else "–"
        nll = "n/a" if row["own_nll"] is None else f"{row['own_nll']:.3f}"
        lines.append(f"| {row['student'] if row['student'] != 'base' else 'none (base)'} | {trained} | "
                     f"{row['accuracy']:.1%} ± {row['accuracy_se']:.1%} ({row['passed']}/{row['problems']}) | "
                     f"{versus} | {nll} | {row['style_per_100_words']:.2f} |")
    lines += ["", "| data | records | correct | thinking ends on the answer | finish reasons | teacher share "
              "| both models wrote in one section |", "|---|---|---|---|---|---|---|"]
    for method, summary in data.items():
        reasons = ", ".join(f"{k} {v}" for k, v in summary["finish_reasons"].items())
        right = result["data_diagnosis"][method]["thinking_right"]
        lines.append(f"| {method} | {summary['records']} | {summary['correct']} | {right} | {reasons} | "
                     f"{summary['teacher_share']:.1%} | {summary['both_wrote']} |")
    tessy = result["data_diagnosis"]["tessy"]
    lines += ["", "| TESSY data: student spans in the thinking | records | TESSY correct "
              "| teacher-only correct on the same prompts |", "|---|---|---|---|"]
    lines += [f"| {'4 or more' if k == '4' else k} | {n} | {ok} | {theirs} |"
              for k, (n, ok, theirs) in tessy["by_student_spans"].items()]
    lines += ["", "| TESSY data: a forced span (hand-overs went empty) | records | TESSY correct "
              "| teacher-only correct on the same prompts |", "|---|---|---|---|"]
    lines += [f"| {'none' if k == 'none' else 'of the ' + k} | {n} | {ok} | {theirs} |"
              for k, (n, ok, theirs) in tessy["by_forced_span"].items()]
    lines += ["", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {stage['wall_s']} |" for name, stage in result["stages"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["students"]
    names = [r["student"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].bar(names, [100 * r["accuracy"] for r in rows], yerr=[100 * r["accuracy_se"] for r in rows], capsize=4)
    axes[0].set_title("held-out accuracy (%)")
    axes[1].bar(names, [r["own_nll"] or 0 for r in rows], color="tab:orange")
    axes[1].set_title("NLL / token of base's own responses")
    axes[2].bar(names, [r["style_per_100_words"] for r in rows], color="tab:green")
    axes[2].set_title("style phrases / 100 words")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
