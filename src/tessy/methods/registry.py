"""The data-method registry: a method turns one prompt into one `SampleResult` with an engine.

Every method (TESSY and the paper's baselines, §3.4) is an async function
`(engine, sample_id, messages, options) -> SampleResult` registered under its CLI name. All of
them return results in the same schema (spans with their author, in the student's format), so
`make_record`, view, analysis and export treat them alike; a method's own extra fields (scores,
the reference answer, which model wrote a mixed sample) go in `SampleResult.extra` and end up as
top-level record keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from tessy.engine import Engine, SampleResult


@dataclass(frozen=True)
class MethodOptions:
    """Settings some methods read (from `SynthesizeConfig`)."""

    candidates: int = 5  # teacher-score: student candidates per prompt


MethodFn = Callable[[Engine, str, list[dict[str, str]], MethodOptions], Awaitable[SampleResult]]

#: name -> (function, one-line description), in registration order.
REGISTRY: dict[str, tuple[MethodFn, str]] = {}


def register(name: str, description: str) -> Callable[[MethodFn], MethodFn]:
    def add(fn: MethodFn) -> MethodFn:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = (fn, description)
        return fn

    return add


async def run_method(engine: Engine, method: str, sample_id: str, messages: list[dict[str, str]],
                     options: MethodOptions | None = None) -> SampleResult:
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(REGISTRY)}")
    fn, _ = REGISTRY[method]
    return await fn(engine, sample_id, messages, options or MethodOptions())


def merge_timings(results: list[SampleResult]) -> dict[str, float]:
    """Generation seconds per role, summed over several results of one sample."""
    total: dict[str, float] = {}
    for result in results:
        for role, seconds in result.generate_s.items():
            total[role] = total.get(role, 0.0) + seconds
    return total


def with_extra(result: SampleResult, **extra: Any) -> SampleResult:
    result.extra = {**(result.extra or {}), **extra}
    return result
