"""Math word problems: exact match of the final numeric answer.

The expected answer is the problem row's ``answer`` (a number, or text whose final number counts;
GSM8K's ``"... #### 72"`` gives 72). The response's answer is, in its final answer
(`answer_text`): the last ``\\boxed{...}``, else the number after the last "answer is" /
"answer:" / "####", else the last number written. Numbers compare exactly as fractions after
removing thousands separators, currency signs and a trailing period: "1,000" = "1000.00" =
"$1000"; "0.5" = "1/2"; 72 != 72.5.
"""

from __future__ import annotations

import re
from fractions import Fraction

from tessy.export.runs import answer_text
from tessy.verify.base import Verdict, Verifier

NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\$?\s?\.\d+")
CUES = re.compile(r"(?:answer\s*(?:is|:|=)|####)\s*", re.I)


def parse_number(text: str) -> Fraction | None:
    """The value of one number as written ("1,234.50", "$3", "-2/3"), or None."""
    t = text.replace("$", "").replace(" ", "").rstrip(".")
    if "/" in t:
        num, _, den = t.partition("/")
        a, b = parse_number(num), parse_number(den)
        return a / b if a is not None and b not in (None, 0) else None
    t = t.replace(",", "")
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text)
    return found[-1].strip() if found else None


def final_answer(text: str) -> str | None:
    """The final numeric answer written in `text`, as written (see the module docstring)."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return last_number(boxed[-1]) or boxed[-1].strip()
    cues = list(CUES.finditer(text))
    if cues:
        after = text[cues[-1].end():]
        match = NUMBER.match(after.lstrip())
        if match:
            return match.group(0).strip()
    return last_number(text)


def expected_answer(value) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return None
    if "####" in value:
        value = value.rsplit("####", 1)[1]
    return last_number(value)


class MathAnswerVerifier(Verifier):
    name = "math"

    def check(self, record: dict) -> Verdict:
        problem = self.problem(record)
        if problem is None:
            return Verdict("error", detail=f"no problem with id {record['id']!r}")
        expected = expected_answer(problem.get("answer"))
        if expected is None or parse_number(expected) is None:
            return Verdict("error", detail=f"problem {record['id']!r} has no numeric 'answer'")
        answer = final_answer(answer_text(record))
        if answer is None:
            return Verdict("fail", expected=expected, detail="no number in the answer")
        value = parse_number(answer)
        passed = value is not None and value == parse_number(expected)
        return Verdict("pass" if passed else "fail", score=1.0 if passed else 0.0, answer=answer,
                       expected=expected, detail="" if passed else f"{answer} != {expected}")
