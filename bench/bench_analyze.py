"""Benchmark: `tessy analyze` at scale. Synthetic responses at 1,000, 10,000 and 100,000, each size
analysed in a fresh process, with its wall time per phase and its peak memory.

Data (deterministic for a seed): two runs of the same prompts, `student-only` and `tessy`, so N
responses are N/2 prompts x 2 methods, written as real records (messages, thinking and answer
spans with token counts, totals) into `records.jsonl` files. Text is drawn from a realistic
vocabulary: a Zipf law (exponent 1.1) over ~170 common English and reasoning words followed by
30,000 made-up words, plus per prompt 40 topic words and 4 identifiers of its own (as code names
are: the vocabulary keeps growing with the prompts), numbers, each method's phrases ("Okay, so",
"Wait," / "Therefore,"), sentences of ~12 words; lengths log-normal, median 400 words
(`--median-words`), 20 to 4,000. The paper's traces are longer (8-32K tokens): memory follows the
non-zeros (responses x distinct words per response), reported per size, so it can be projected.

Measured in the child, the whole of `tessy analyze --no-nll` in its own steps: load (a Row per
record) and align; reading the responses into sparse word counts; word frequencies; TF-IDF (in
place of the counts); similarity pairs and the PCA (ARPACK on the implicitly centred matrix); the
report (PNGs, report.html, analysis.json). Peak memory is the child's `ru_maxrss` (the kernel's
high-water mark of its resident set) after each step, and once after imports (the fixed part:
Python, numpy, scipy, tessy).

Run on purpose (not a test): `nice -n 15 python bench/bench_analyze.py [--sizes 1000,10000,100000]`.
Prints a table and writes bench/results/analyze.json. Quote figures with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("student-only", "tessy")
COMMON = """the a of to and is in that it we for this so be with as on are by not at or if then
can from but all which our number each one two value first next let now need check case list
sum result step find function return loop index array string count total given problem answer
since because means also just only same other than more less both into out up down new way
time want know think see try get make use here there what when how why where while true false
compute compare order sort left right start end small large equal greater zero add minus times
condition input output variable element pair left prime even odd remainder digit length maximum
minimum half double line part""".split()
STYLE = {"student-only": ["Okay, so", "Wait,", "Hmm,", "Let me think.", "Alright,", "I guess"],
         "tessy": ["Okay, so", "Wait,", "Therefore,", "Thus", "We obtain", "It follows that"]}
SYLLABLES = "ka ro mi tu se la po ne vi da sho ren tal mor quin bex dri fal gon hul".split()


def rss_mb() -> float:
    """This process's peak resident set so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------- data

def lexicon(size: int = 30_000) -> list[str]:
    words: list[str] = []
    seen = set(COMMON)
    n = len(SYLLABLES)
    for i in range(size * 2):
        a, b, c = i % n, (i // n) % n, (i // (n * n)) % n
        word = SYLLABLES[a] + SYLLABLES[b] + (SYLLABLES[c] if i >= n * n else "") + ("" if i < n**3 else str(i // n**3))
        if word not in seen:
            seen.add(word)
            words.append(word)
        if len(words) == size:
            break
    return COMMON + words


def write_runs(folder: Path, responses: int, seed: int = 0, median_words: int = 400) -> list[Path]:
    """Two run folders (student-only, tessy) holding `responses` records in all; their paths."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = lexicon()
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-1.1)
    cdf /= cdf[-1]
    prompts = max(responses // len(METHODS), 1)
    files = {method: open(_run_folder(folder, method) / "records.jsonl", "w") for method in METHODS}
    try:
        for p in range(prompts):
            topic = [words[i] for i in rng.integers(len(COMMON), len(words), 40)]
            topic += [f"{SYLLABLES[(p + k) % len(SYLLABLES)]}_{k}_{p}" for k in range(4)]
            for method in METHODS:
                length = int(np.clip(rng.lognormal(np.log(median_words), 0.6), 20, 4000))
                ids = np.searchsorted(cdf, rng.random(length))
                draw = rng.random(length)
                tokens = [words[i] for i in ids]
                for j in np.flatnonzero(draw < 0.08):
                    tokens[j] = topic[rng.integers(len(topic))]
                for j in np.flatnonzero((draw >= 0.08) & (draw < 0.11)):
                    tokens[j] = str(int(rng.integers(0, 1000)))
                for j in np.flatnonzero(draw > 0.985):
                    tokens[j] = STYLE[method][rng.integers(len(STYLE[method]))]
                for j in range(11, length, 12):
                    tokens[j] += "."
                cut = max(1, int(length * 0.8))
                thinking, answer = " ".join(tokens[:cut]), " " + " ".join(tokens[cut:])
                record = _record(f"p{p}", method, f"Problem {p}: {' '.join(topic[:6])}?", thinking, answer,
                                 int(cut * 1.3), int((length - cut) * 1.3))
                files[method].write(json.dumps(record) + "\n")
    finally:
        for file in files.values():
            file.close()
    return [folder / method for method in METHODS]


def _run_folder(folder: Path, method: str) -> Path:
    path = folder / method
    path.mkdir(parents=True, exist_ok=True)
    return path


def _record(sample_id: str, method: str, prompt: str, thinking: str, answer: str, think_tokens: int,
            answer_tokens: int) -> dict:
    teacher = method != "student-only"
    spans = [{"role": "student", "section": "thinking", "text": thinking[:40], "tokens_student": 8},
             {"role": "teacher" if teacher else "student", "section": "thinking", "text": thinking[40:],
              "tokens_student": max(think_tokens - 8, 0)},
             {"role": "student", "section": "answer", "text": answer, "tokens_student": answer_tokens}]
    for span in spans:
        span.update({"tokens_own": span["tokens_student"], "generated": span["tokens_student"], "discarded": 0,
                     "forced": False})
    total = sum(s["tokens_student"] for s in spans)
    teacher_tokens = sum(s["tokens_student"] for s in spans if s["role"] == "teacher")
    return {"id": sample_id, "method": method,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": thinking + answer}],
            "spans": spans,
            "totals": {"spans": len(spans), "tokens_student": total, "teacher_tokens_student": teacher_tokens,
                       "teacher_share": teacher_tokens / total if total else 0.0, "thinking_teacher_share": None,
                       "generated": total, "discarded": 0, "steps": 1},
            "finish_reason": "stop", "timings": {"wall_s": 1.0, "predict_s": 0.0, "generate_s": {}},
            "models": {"student": {"model": "synthetic", "format": "plain", "predictor": None}},
            "config_fingerprint": "bench", "tessy_version": "0"}


# ---------------------------------------------------------------------------------- child

def child(runs: list[str], output: str, max_features: int) -> dict:
    """`tessy analyze --no-nll` step by step in this process; times, memory and sizes."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy  # noqa: F401  (the fixed part: measured after imports)
    import scipy.sparse.linalg  # noqa: F401

    from tessy.analysis import figures as f
    from tessy.analysis.load import align, load_runs
    from tessy.analysis.report import write_report

    steps: dict[str, dict[str, float]] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name] = {"s": round(now - clock, 3), "peak_rss_mb": round(rss_mb(), 1)}
        clock = now

    step("imports")
    start = time.perf_counter()
    groups = load_runs(runs)
    align(groups)
    figures = {"methods": [g.label for g in groups], "sources": {g.label: g.source for g in groups},
               "prompts": {g.label: len(g.rows) for g in groups},
               "teacher_share": {g.label: f.teacher_share(g) for g in groups},
               "lengths": {g.label: f.lengths(g) for g in groups}}
    step("load")
    counts, owners = f.count_texts(groups)
    step("read_count")
    figures.update(f.words_figure(groups, counts, owners, 15))
    step("words")
    seen, nnz = len(counts.index), counts.nnz
    matrix, vocabulary = counts.tfidf(max_features)
    del counts
    step("tfidf")
    figures.update(f.similarity(groups, matrix, owners))
    figures["similarity"].update({"vocabulary_size": len(vocabulary), "words_seen": seen,
                                  "max_features": max_features, "nonzeros": nnz})
    step("similarity_pca")
    figures["student_nll"], figures["student_model"] = None, None
    write_report(figures, output)
    step("report")
    return {"responses": len(owners), "nonzeros": nnz, "words_seen": seen, "vocabulary_size": len(vocabulary),
            "explained_variance": figures["pca"]["explained_variance"],
            "similarity_to_student": figures["similarity"]["to_student_only"]["tessy"]["mean"],
            "wall_s": round(time.perf_counter() - start, 3), "peak_rss_mb": round(rss_mb(), 1),
            "fixed_rss_mb": steps["imports"]["peak_rss_mb"], "steps": steps}


# --------------------------------------------------------------------------------- parent

def run_size(folder: Path, responses: int, seed: int = 0, median_words: int = 400,
             max_features: int = 2**18) -> dict:
    """Write the data for one size under `folder`, analyse it in a fresh process, return its figures."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = write_runs(folder / "runs", responses, seed, median_words)
    generate_s = time.perf_counter() - started
    size_mb = sum((run / "records.jsonl").stat().st_size for run in runs) / 2**20
    command = [sys.executable, __file__, "--child", *map(str, runs), "--report", str(folder / "report"),
               "--max-features", str(max_features)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the analysis child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update({"records_mb": round(size_mb, 1), "generate_s": round(generate_s, 2),
                   "text_rss_mb": round(result["steps"]["similarity_pca"]["peak_rss_mb"] - result["fixed_rss_mb"], 1)})
    result["bytes_per_nonzero"] = round(result["text_rss_mb"] * 2**20 / max(result["nonzeros"], 1), 1)
    return result


def table(results: list[dict]) -> str:
    lines = ["| responses | records file | non-zeros | words seen (kept) | read+count | TF-IDF | similarity+PCA "
             "| report | total wall | peak RSS | text figures over imports | bytes / non-zero |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["steps"]
        lines.append(
            f"| {r['responses']:,} | {r['records_mb']:,.0f} MB | {r['nonzeros'] / 1e6:.1f} M "
            f"| {r['words_seen']:,} ({r['vocabulary_size']:,}) | {s['read_count']['s']:.1f} s | {s['tfidf']['s']:.1f} s "
            f"| {s['similarity_pca']['s']:.1f} s | {s['report']['s']:.1f} s | {r['wall_s']:.1f} s "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['text_rss_mb']:,.0f} MB | {r['bytes_per_nonzero']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="Responses per run, comma-separated.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--median-words", type=int, default=400, help="Median words per response (default: 400).")
    parser.add_argument("--max-features", type=int, default=2**18, help="TF-IDF vocabulary cap (default: 262,144).")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "analyze.json"))
    parser.add_argument("--work", help="Folder for the data and reports (default: a temporary one, removed).")
    parser.add_argument("--child", nargs="+", metavar="RUN", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.report, args.max_features)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_start = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-analyze-") as scratch:
        work = Path(args.work or scratch)
        for size in sizes:
            result = run_size(work / str(size), size, args.seed, args.median_words, args.max_features)
            results.append(result)
            print(f"{size:,} responses: {result['wall_s']:.1f} s, peak {result['peak_rss_mb']:,.0f} MB "
                  f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr)
            if not args.work:
                for run in (work / str(size) / "runs").iterdir():
                    (run / "records.jsonl").unlink()
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "uptime_at_start": uptime,
           "load_at_start": [round(v, 2) for v in load_start], "load_at_end": [round(v, 2) for v in os.getloadavg()],
           "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
           "seed": args.seed, "median_words": args.median_words, "max_features": args.max_features, "runs": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(table(results))
    print(f"uptime at start: {uptime}; load at end: {out['load_at_end']}; written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
