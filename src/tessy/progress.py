"""Progress bars for the commands that judge, evaluate and join (verify, eval, merge): one rule.

`bar(total, desc, unit, show)` is a tqdm bar on stderr with its total, rate and ETA. ``show``
True draws it, False never, None (the default everywhere) only when stderr is a terminal, so a
log file, a pipe or a test never gets one. A bar writes nothing but to stderr: what a command
writes to its output files and stdout does not change with it. tqdm is imported only when a bar
is made.
"""

from __future__ import annotations

import sys
from typing import Any


def enabled(show: bool | None) -> bool:
    """Whether a bar with this ``show`` setting is drawn here and now."""
    if show is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return bool(show)


class _Off:
    """The bar when none is drawn: takes every call and does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def bar(total: int | None, desc: str, unit: str, show: bool | None = None, initial: int = 0) -> Any:
    """A tqdm bar (or a silent stand-in with the same methods) counting ``unit`` up to ``total``."""
    if not enabled(show):
        return _Off()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True)
