"""`tessy`: teacher and student write one response together (Algorithm 1, `tessy.engine.cooperative`)."""

from tessy.methods.registry import register


@register("tessy", "teacher and student write one response together, span by span")
async def tessy(engine, sample_id, messages, options):
    return await engine.run(sample_id, messages)
