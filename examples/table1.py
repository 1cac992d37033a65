"""The paper's Table 1 in miniature: fine-tune the student on student-only, teacher-only and TESSY
data made from the same prompts, and compare the students on held-out problems.

    python examples/table1.py --size full --output runs/table1        # hours on 2 CPU cores; resumable
    python examples/table1.py --size tiny --output runs/table1-tiny   # minutes; the test suite runs it

The setting (`--size full`): the `qwen` pair of `tessy demo`. The student is Qwen2.5-Coder-0.5B
-Instruct *with its voice*: the think-aloud preamble (`tessy.voices`) is part of the student, seen
before every prompt when it writes data, when it is fine-tuned and when it is evaluated, so "its
own distribution" is that of the voiced model. The teacher is Qwen2.5-Coder-1.5B-Instruct in the
think-steps voice: terse reasoning in another style, and measurably better at the task. This stands
for the paper's pair (GPT-OSS-120B teaching Qwen3-8B): a stronger teacher whose connecting text
differs from the student's. `--size tiny` runs the same stages with the small demo pair
(SmolLM2-135M student, Gemma-3-270m teacher) on a few problems, to check the machinery.

Stages, in order; each is skipped once done (`OUT/stages.json` holds each finished stage and its
wall time), and each one killed part-way goes on where it stopped when the command is rerun
(synthesize, verify and eval are exactly-once by id; the fine-tune saves checkpoints):

1. prompts   reasoning-gym problems: training prompts, and held-out ones (other ids, and no
             question that is also a training question);
2. data      student-only, teacher-only and TESSY records from the training prompts;
3. verify    each record judged by the task's scorer (reported, not used as a filter);
4. export    the same filters for every method (complete responses only);
5. sft       the same recipe, steps and seed for every method (examples/sft/train.py);
6. own       the base student's own sampled responses to some of the held-out prompts (for drift);
7. eval      base and fine-tuned students, greedy, on the held-out problems: accuracy, and each
             one's NLL of the base student's own responses;
8. report    OUT/table1.json (every figure), OUT/table1.md and OUT/table1.png.

Figures per student: held-out accuracy; the paired comparison with the teacher-only student
(problems gained and lost, exact McNemar p-value); drift (NLL per token of the base student's own
held-out responses); voice (the lexicon's style phrases per 100 words of its held-out answers);
rows it was trained on. Of the data: teacher share of the TESSY records and in how many both
models wrote.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tessy import durable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # table1_report, next to this file

from table1_report import METHODS, VERIFIER, read_jsonl, report  # noqa: E402


@dataclass(frozen=True)
class Size:
    """One preset of the experiment."""

    pair: str                # a pair of `tessy.cli.demo.PAIRS`
    task: str                # a reasoning-gym task
    train: int               # training prompts (data for every method)
    heldout: int             # held-out problems for the evaluation
    own: int                 # of those, how many the base student answers (sampled) for the drift figure
    max_tokens: int          # response budget of synthesis and evaluation, in student tokens
    max_answer_tokens: int | None
    sft_steps: int
    sft_batch: int
    learning_rate: float
    sft_max_length: int
    save_steps: int
    task_options: tuple[tuple[str, int], ...] = ()
    sft_bf16: bool = False   # fine-tune in bf16 mixed precision (every method alike)
    max_batch: int = 16      # sequences per forward pass in synthesis and evaluation (speed only)


SIZES = {
    "tiny": Size(pair="small", task="products", train=3, heldout=3, own=3, max_tokens=24, max_answer_tokens=None,
                 sft_steps=1, sft_batch=2, learning_rate=1e-4, sft_max_length=256, save_steps=0,
                 task_options=(("min_digits", 1), ("max_digits", 1))),
    "full": Size(pair="qwen", task="products", train=128, heldout=200, own=64, max_tokens=256, max_answer_tokens=64,
                 sft_steps=16, sft_batch=8, learning_rate=2e-5, sft_max_length=1024, save_steps=2, sft_bf16=True,
                 task_options=(("min_digits", 2), ("max_digits", 2))),
}


# ---------------------------------------------------------------------------- bookkeeping


class Stages:
    """`OUT/stages.json`: which stages are done and how long each took (rewritten atomically)."""

    def __init__(self, folder: Path):
        self.path = folder / "stages.json"
        self.done = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, work) -> None:
        if name in self.done:
            print(f"[{name}] done before ({self.done[name]['wall_s']} s); skipped", flush=True)
            return
        print(f"[{name}] ...", flush=True)
        started = time.monotonic()
        work()
        self.done[name] = {"wall_s": round(time.monotonic() - started, 1),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        durable.write_atomic(self.path, json.dumps(self.done, indent=2) + "\n")
        print(f"[{name}] done in {self.done[name]['wall_s']} s", flush=True)


def sft_recipe():
    spec = importlib.util.spec_from_file_location("sft_recipe", HERE / "sft" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sft_recipe"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- stages


def make_prompts(size: Size, out: Path) -> None:
    """Training prompts, then held-out problems of the same task that share no question with them."""
    from tessy.verify.reasoning_gym import make_prompts as write

    options = dict(size.task_options)
    train = write(out / "prompts" / "train.jsonl", size.task, size.train, seed=0, **options)
    seen = {row["question"] for row in read_jsonl(train)}
    # Draw extra candidates, then keep the first `heldout` whose question is new.
    pool = write(out / "prompts" / "heldout-pool.jsonl", size.task, size.heldout * 2 + 8, seed=0,
                 offset=100_000, **options)
    fresh = [row for row in read_jsonl(pool) if row["question"] not in seen][:size.heldout]
    if len(fresh) < size.heldout:
        raise RuntimeError(f"only {len(fresh)} held-out {size.task} problems differ from the training ones")
    for name, rows in (("heldout", fresh), ("own", fresh[:size.own])):
        durable.write_atomic(out / "prompts" / f"{name}.jsonl",
                             "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    pool.unlink()


def synth_config(size: Size, prompts: Path, output: Path, method: str):
    from tessy.cli.demo import pair_config

    # One batch in flight (not every prompt): the records land as they finish, so a run killed
    # part-way loses at most one batch's work (a record is written whole, at its end).
    return pair_config(size.pair, prompts, output, method=method, max_tokens=size.max_tokens,
                       max_answer_tokens=size.max_answer_tokens, max_batch=size.max_batch,
                       concurrency=size.max_batch, progress=False)


def synthesize_all(size: Size, out: Path) -> None:
    from tessy.runner import synthesize

    for method in METHODS:
        report = synthesize(synth_config(size, out / "prompts" / "train.jsonl", out / "data" / method, method))
        print(f"  {method}: {report.written} written, {report.failed} failed, teacher share "
              f"{report.teacher_share:.1%}", flush=True)
        if report.failed:
            raise RuntimeError(f"{method}: {report.failed} prompts failed; rerun to retry them")


def verify_all(out: Path) -> None:
    from tessy.verify import verify_run

    for method in METHODS:
        verify_run(out / "data" / method, VERIFIER, problems=out / "prompts" / "train.jsonl")


def export_all(out: Path) -> None:
    from tessy.export import Filters, export_runs

    for method in METHODS:
        export_runs([out / "data" / method], out / "sft-data" / method, to="messages", filters=Filters(),
                    validation_fraction=0.0, overwrite=True)


def finetune_all(size: Size, out: Path) -> None:
    from tessy.cli.demo import PAIRS

    pair = PAIRS[size.pair]
    for method in METHODS:
        target = out / "sft" / method
        if (target / "metrics.json").exists() and method not in missing_models(out):
            continue
        if not json.loads((out / "sft-data" / method / "export.json").read_text())["splits"].get("train"):
            # Nothing to learn from: this student is the base model (the table says it trained on 0 rows).
            target.mkdir(parents=True, exist_ok=True)
            durable.write_atomic(target / "metrics.json", json.dumps({"train_rows": 0, "steps": 0}) + "\n")
            continue
        settings = dict(
            data=str(out / "sft-data" / method), output=str(target), model=pair.student, voice=pair.student_voice,
            max_steps=size.sft_steps, learning_rate=size.learning_rate,
            # One row per forward pass, `sft_batch` rows per optimizer step: the logits of 8 rows over
            # Qwen's 152k vocabulary alone are ~5 GB a copy, and 8 rows at once were killed for memory.
            batch_size=1, grad_accum=size.sft_batch,
            max_length=size.sft_max_length, save_steps=size.save_steps, seed=0, logging_steps=1,
            bf16=size.sft_bf16)
        # In a child process: the synthesis stages' memory is never given back to the system, and
        # the fine-tune on top of it was killed for memory (24 GB) on a 24 GB machine.
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import table1; recipe = table1.sft_recipe(); "
                "recipe.train(recipe.RecipeConfig(**json.loads(sys.argv[2])))")
        subprocess.run([sys.executable, "-c", code, str(HERE), json.dumps(settings)], check=True)


def missing_models(out: Path) -> list[str]:
    """Methods whose student was fine-tuned but whose weights are not here (they are never committed)."""
    missing = []
    for method in METHODS:
        metrics = out / "sft" / method / "metrics.json"
        if metrics.exists() and json.loads(metrics.read_text())["train_rows"] and \
                not (out / "sft" / method / "config.json").exists():
            missing.append(method)
    return missing


def own_responses(size: Size, out: Path) -> None:
    from tessy.runner import synthesize

    synthesize(synth_config(size, out / "prompts" / "own.jsonl", out / "own", "student-only"))


def evaluate_all(size: Size, out: Path) -> None:
    from tessy.cli.demo import PAIRS
    from tessy.verify.evaluate import evaluate

    pair = PAIRS[size.pair]
    if missing_models(out):  # never evaluate the base model in a fine-tuned student's place
        raise RuntimeError(f"the fine-tuned weights of {', '.join(missing_models(out))} are missing in {out / 'sft'}")
    trained = {m: out / "sft" / m for m in METHODS}
    models = {"base": pair.student,
              **{m: str(path) if (path / "config.json").exists() else pair.student for m, path in trained.items()}}
    evaluate(models, out / "prompts" / "heldout.jsonl", VERIFIER, out / "eval", own_responses=out / "own",
             max_new_tokens=size.max_tokens, batch_size=size.max_batch, chat_format=pair.format, voice=pair.student_voice)


# ---------------------------------------------------------------------------- command


def run(size: Size, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    stages.run("prompts", lambda: make_prompts(size, out))
    stages.run("data", lambda: synthesize_all(size, out))
    stages.run("verify", lambda: verify_all(out))
    stages.run("export", lambda: export_all(out))
    if "eval" not in stages.done and "sft" in stages.done and missing_models(out):
        print(f"[sft] the fine-tuned weights of {', '.join(missing_models(out))} are not here (they are not "
              "committed): training them again", flush=True)
        del stages.done["sft"]
    stages.run("sft", lambda: finetune_all(size, out))
    stages.run("own", lambda: own_responses(size, out))
    stages.run("eval", lambda: evaluate_all(size, out))
    result = report(asdict(size), out, stages.done)
    print((out / "table1.md").read_text())
    print(f"figures: {out / 'table1.json'}, {out / 'table1.md'}, {out / 'table1.png'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="Preset (default: full).")
    parser.add_argument("--output", required=True, help="Folder for every stage's files; rerun to resume.")
    parser.add_argument("--train", type=int, help="Training prompts (default: the preset's).")
    parser.add_argument("--heldout", type=int, help="Held-out problems (default: the preset's).")
    parser.add_argument("--sft-steps", type=int, help="Optimizer steps of each fine-tune (default: the preset's).")
    parser.add_argument("--max-batch", type=int,
                        help="Sequences per forward pass in synthesis (default: the preset's); a speed setting, "
                             "so a run may resume with another.")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    overrides = {k: v for k, v in (("train", args.train), ("heldout", args.heldout), ("sft_steps", args.sft_steps),
                                   ("max_batch", args.max_batch)) if v is not None}
    out = Path(args.output)
    settings = out / "size.json"
    size = replace(size, **overrides)
    wanted = json.loads(json.dumps(asdict(size)))
    if settings.exists():
        def shaping(settings: dict) -> dict:
            return {k: v for k, v in settings.items() if k != "max_batch"}

        if shaping(json.loads(settings.read_text())) != shaping(wanted):
            parser.error(f"{out} was made with other settings ({settings}); use another --output")
    out.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(wanted, indent=2) + "\n")
    run(size, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
