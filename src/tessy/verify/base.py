"""The verifier interface: one small class per way of checking a response.

A verifier is built once per `tessy verify` run with the problems it checks against (a dict
from record id to that problem's row, or None when it brings its own) and its options, then
`check(record)` returns one `Verdict` for one record. `check` must not raise for a bad
response (a wrong or missing answer is a ``fail``); it returns ``error`` when it cannot judge at
all (no problem with that id, a problem without a reference answer). It may be called from
several threads at once.

Implementations are peer modules of this one (`humaneval`, `reasoning_gym`, `math_answer`),
registered by name in `tessy.verify.VERIFIERS`; any ``module:Class`` path works too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

STATUSES = ("pass", "fail", "error")


@dataclass(frozen=True)
class Verdict:
    status: str                 # "pass" | "fail" | "error"
    score: float = 0.0          # 1.0 for a pass; a verifier may give partial credit in between
    answer: str | None = None   # what was extracted from the response and checked
    expected: str | None = None  # the reference it was checked against, when there is one
    detail: str = ""            # why: the harness result, the mismatch, the error

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Verifier(ABC):
    #: The name used with ``--with`` and in the side file's name.
    name: ClassVar[str]
    #: Whether `check` needs a problems table (from ``--problems`` or the run's input file).
    needs_problems: ClassVar[bool] = True

    def __init__(self, problems: dict[str, dict] | None = None, **options: Any):
        self.problems = problems
        self.options = options

    def default_problems(self) -> dict[str, dict] | None:
        """Problems to use when none are given (None: use the run's input file)."""
        return None

    def problem(self, record: dict) -> dict | None:
        return (self.problems or {}).get(str(record["id"]))

    @abstractmethod
    def check(self, record: dict) -> Verdict:
        """The verdict on one record's response."""
