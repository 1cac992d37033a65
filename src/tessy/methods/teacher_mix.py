"""`teacher-mix`: each prompt is answered wholly by the teacher or wholly by the student, about
half each (the paper mixes 1:1). The choice is a hash of the engine's seed and the sample id, so
it is the same on every rerun and independent of prompt order; the record says which
(`mix_role`)."""

import hashlib

from tessy.engine import STUDENT, TEACHER
from tessy.methods.registry import register, with_extra
from tessy.methods.single import write_alone


def mix_role(seed: int, sample_id: str) -> str:
    digest = hashlib.sha256(f"{seed}:{sample_id}:teacher-mix".encode()).digest()
    return TEACHER if digest[0] % 2 == 0 else STUDENT


@register("teacher-mix", "half the prompts from the teacher, half from the student (by id and seed)")
async def teacher_mix(engine, sample_id, messages, options):
    role = mix_role(engine.seed, sample_id)
    return with_extra(await write_alone(engine, sample_id, messages, role), mix_role=role)
