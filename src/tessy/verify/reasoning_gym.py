"""reasoning-gym tasks: score the response's answer with the task's own scorer.

Problems are reasoning-gym entries (``question``, ``answer``, ``metadata`` with
``source_dataset``), one row per id: `make_prompts` writes such a file, which is also a prompts
file for `tessy synthesize` (``prompt`` = the question plus an instruction on how to answer), so
the run's input file is the verifier's default problems file.

The answer checked is, from the response's final answer (`answer_text`): the text inside the last
``<answer>...</answer>`` when there is one (reasoning-gym's own convention), else for a numeric
reference the final number (`math_answer.final_answer`), else the last non-empty line. The task's
scorer (`reasoning_gym.get_score_answer_fn`) gives a score in [0, 1]; the verdict is ``pass``
when it reaches ``min_score`` (default 1.0: reasoning-gym gives small partial credit to wrong
answers of some tasks, which is not a pass).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tessy import durable
from tessy.export.runs import answer_text
from tessy.verify.base import Verdict, Verifier
from tessy.verify.math_answer import final_answer, parse_number

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
INSTRUCTION = "Solve the problem step by step. End with the final answer on its own line."


def extract(answer: str, expected: str) -> str | None:
    tagged = ANSWER_TAG.findall(answer)
    if tagged:
        return tagged[-1].strip()
    if parse_number(str(expected)) is not None:
        return final_answer(answer)
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    return lines[-1] if lines else None


class ReasoningGymVerifier(Verifier):
    name = "reasoning-gym"

    def check(self, record: dict) -> Verdict:
        import reasoning_gym

        problem = self.problem(record)
        if problem is None:
            return Verdict("error", detail=f"no problem with id {record['id']!r}")
        metadata = problem.get("metadata") or {}
        task = metadata.get("source_dataset")
        if "answer" not in problem or not task:
            return Verdict("error", detail=f"problem {record['id']!r} is not a reasoning-gym entry "
                                            "(needs 'answer' and 'metadata.source_dataset')")
        expected = str(problem["answer"])
        answer = extract(answer_text(record), expected)
        if answer is None:
            return Verdict("fail", expected=expected, detail="no answer in the response")
        entry = {"question": problem.get("question", ""), "answer": problem["answer"], "metadata": metadata}
        try:
            score = float(reasoning_gym.get_score_answer_fn(task)(answer, entry))
        except Exception as exc:  # a scorer that chokes on odd text judges nothing
            return Verdict("error", answer=answer, expected=expected, detail=f"{task} scorer raised {exc!r}")
        passed = score >= float(self.options.get("min_score") or 1.0)
        return Verdict("pass" if passed else "fail", score=score, answer=answer, expected=expected,
                       detail=f"{task} score {score:g}")


def make_prompts(path: str | Path, task: str, size: int, seed: int = 0, instruction: str = INSTRUCTION,
                 offset: int = 0, **task_options) -> Path:
    """Write `size` problems of a reasoning-gym task as a prompts + problems JSONL file.

    Ids are ``{task}/{seed}/{index}``; `offset` skips the first problems, so held-out problems
    of the same task and seed never share an id with the ones used for synthesis. `task_options`
    go to the task's config (e.g. ``min_terms=2, max_terms=2, min_digits=1, max_digits=1``)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=offset + size, seed=seed, **task_options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable.replacing(path, "w", encoding="utf-8") as f:
        for index in range(offset, offset + size):
            entry = dataset[index]
            prompt = entry["question"] + ("\n\n" + instruction if instruction else "")
            row = {"id": f"{task}/{seed}/{index}", "prompt": prompt, "question": entry["question"],
                   "answer": entry["answer"], "metadata": entry["metadata"]}
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path
