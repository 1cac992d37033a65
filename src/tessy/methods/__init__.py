"""Data methods, one module each, chosen with `tessy synthesize --method NAME`.

- `tessy`: teacher and student write one response together (Algorithm 1);
- `teacher-only`, `student-only`: one model writes everything;
- `teacher-think`: the teacher thinks, the student answers;
- `teacher-answer`: the student thinks, the teacher answers;
- `teacher-mix`: each prompt goes wholly to the teacher or the student (a hash of seed and id);
- `teacher-score`: the student writes n candidates, the teacher scores each, the best is kept;
- `teacher-reference`: the teacher writes a reference answer, the student writes thinking and
  answer with it in its prompt; the record keeps the plain prompt.

For model families without a thinking section (the small CPU pair) `teacher-think` and
`teacher-answer` treat the first paragraph as the thinking (see `methods.split`).
"""

# Importing a method module registers it; this order is the order of `METHODS`.
from tessy.methods import tessy  # noqa: F401, I001
from tessy.methods import single, split, teacher_mix, teacher_score, teacher_reference  # noqa: F401
from tessy.methods.registry import REGISTRY, MethodOptions, register, run_method

#: Method names in the order the paper lists them (TESSY first).
METHODS = tuple(REGISTRY)

__all__ = ["METHODS", "REGISTRY", "MethodOptions", "register", "run_method"]
