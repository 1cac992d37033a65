"""Stopping at the cut: a step stops generating once its cut is certain, and the records are the
ones generating all k tokens and cutting afterwards gives (same seed), only cheaper.

The comparison runs the same predictor twice: once declaring how far later text can change its
verdicts (so the engine may stop early), once declaring nothing (`lookahead_chars = None`: the
paper's generate-then-cut). Scripted models on real tokenizers, and the real demo pair.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.engine import Engine, Limits, Party, Speedups
from tessy.predictors.base import BoundaryPredictor, SpanQuery, count_final
from tessy.predictors.lexicon import LexiconPredictor
from tests.test_engine import KeywordPredictor, PlainTestFormat, ThinkTestFormat

PROMPTS = ["What is 2+3?", "Write a function that reverses a list.", "Explain why the sky is blue."]


class TokenLocal(KeywordPredictor):
    """KeywordPredictor's verdicts depend only on a piece and the pieces before it."""

    lookahead_chars = 0


class Blind(KeywordPredictor):
    lookahead_chars = None


class Wrapped(BoundaryPredictor):
    """Another predictor's verdicts, with a lookahead declared here (None: generate-then-cut)."""

    def __init__(self, inner: BoundaryPredictor, lookahead_chars: int | None):
        self.inner, self.lookahead_chars = inner, lookahead_chars

    async def label(self, query: SpanQuery) -> list[bool]:
        return await self.inner.label(query)


def comparable(result) -> dict:
    """A sample's record content, less what stopping early is meant to change."""
    spans = [{key: value for key, value in dataclasses.asdict(span).items() if key not in ("generated", "discarded")}
             for span in result.spans]
    return {"content": result.assistant_content, "finish": result.finish_reason, "spans": spans}


def run_all(engine: Engine, prompts=PROMPTS) -> list:
    async def go():
        return await asyncio.gather(*(engine.run(f"p{i}", [{"role": "user", "content": prompt}])
                                      for i, prompt in enumerate(prompts)))

    return asyncio.run(go())


def scripted_engine(student_tok, teacher_tok, predictor_cls, fmt=None, k=8, **limits):
    fmt = fmt or PlainTestFormat()
    student = Party("student", ScriptedBackend(student_tok, STUDENT_SCRIPT, "student"), fmt, predictor_cls(), k=k)
    teacher = Party("teacher", ScriptedBackend(teacher_tok, TEACHER_SCRIPT, "teacher"), fmt, predictor_cls(), k=k)
    return Engine(student, teacher, Limits(**limits))


STUDENT_SCRIPT = "Okay, so wait. Hmm, so the sum. Okay wait so hmm, fine. So " * 4
TEACHER_SCRIPT = "We add two and three to get five. Wait, then we check it. Okay, so the result holds. " * 4


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 8, 20])
@pytest.mark.parametrize("thinking", [False, True])
def test_scripted_records_identical_and_cheaper(smol_tokenizer, gemma_tokenizer, k, thinking):
    fmt = ThinkTestFormat() if thinking else None
    limits = dict(max_tokens=120, max_answer_tokens=20) if thinking else dict(max_tokens=120)
    early = run_all(scripted_engine(smol_tokenizer, gemma_tokenizer, TokenLocal, fmt, k, **limits))
    late = run_all(scripted_engine(smol_tokenizer, gemma_tokenizer, Blind, fmt, k, **limits))
    assert [comparable(r) for r in early] == [comparable(r) for r in late]
    assert sum(r.generated for r in early) <= sum(r.generated for r in late)
    if k >= 8:
        assert sum(r.generated for r in early) < sum(r.generated for r in late)
    for result in early:  # totals stay consistent
        kept = sum(span.tokens_own for span in result.spans)
        assert result.discarded == result.generated - kept


class Counted(TokenLocal):
    """TokenLocal, counting its calls; costly (the base default), so asked as a step's tokens double."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    async def label(self, query: SpanQuery) -> list[bool]:
        self.calls += 1
        return await super().label(query)


class CountedCheap(Counted):
    cheap = True  # asked at every arrival


def test_a_costly_predictor_is_asked_as_the_tokens_double(smol_tokenizer, gemma_tokenizer):
    engines = {cls: scripted_engine(smol_tokenizer, gemma_tokenizer, cls, k=20, max_tokens=120)
               for cls in (CountedCheap, Counted)}
    results = {cls: run_all(engine) for cls, engine in engines.items()}
    assert [comparable(r) for r in results[Counted]] == [comparable(r) for r in results[CountedCheap]]
    calls = {cls: sum(party.predictor.calls for party in engine.parties.values()) for cls, engine in engines.items()}
    assert calls[Counted] < calls[CountedCheap], calls
    # the price: a cut may be seen a little later, never more than the step's k tokens
    generated = {cls: sum(r.generated for r in result) for cls, result in results.items()}
    assert generated[CountedCheap] <= generated[Counted], generated


@pytest.mark.parametrize("usual_turn", [0, 100])
def test_a_long_turn_asks_a_costly_predictor_at_most_twice_per_later_step(smol_tokenizer, gemma_tokenizer, usual_turn):
    # The student hands over at once; the teacher writes capability only, step after step.
    fmt, k = PlainTestFormat(), 8
    student = Party("student", ScriptedBackend(smol_tokenizer, "Numbers add up. " * 20, "student"), fmt, Counted(), k=k)
    teacher = Party("teacher", ScriptedBackend(gemma_tokenizer, "We add two and three to get five. " * 20, "teacher"),
                    fmt, Counted(), k=k)
    engine = Engine(student, teacher, Limits(max_tokens=80))
    engine.learned.span_lengths["teacher"].extend([usual_turn] * 4 if usual_turn else [])  # earlier turns, if any
    result = run_all(engine, PROMPTS[:1])[0]
    steps = engine.learned.requests["teacher"][1]  # one request per step
    assert steps >= 5 and [span.role for span in result.spans] == ["teacher"], result.finish_reason
    # the first step at its 1st, 2nd and 4th token (or where turns end) and at its end; each later
    # one halfway (no turn has ended yet) or, when turns usually go on past it, only at its end
    later = 1 if usual_turn else 2
    assert teacher.predictor.calls <= 4 + later * (steps - 1), (teacher.predictor.calls, steps)


def test_empty_handover_costs_few_tokens(smol_tokenizer, gemma_tokenizer):
    # The student writes capability at once: its span is cut to nothing, at its first token.
    fmt = PlainTestFormat()
    student = Party("student", ScriptedBackend(smol_tokenizer, "Numbers add up. " * 20, "student"), fmt, TokenLocal(), k=20)
    teacher = Party("teacher", ScriptedBackend(gemma_tokenizer, "We add them. Okay, " * 20, "teacher"), fmt,
                    TokenLocal(), k=20)
    engine = Engine(student, teacher, Limits(max_tokens=60), trace=True)
    result = run_all(engine, PROMPTS[:1])[0]
    empty = [step for step in result.trace if step["keep"] == 0 and not step["forced"]]
    assert empty
    # the cut token and the one after it (its first character decides the boundary), not k
    assert all(len(step["pieces"]) <= 2 for step in empty), [len(step["pieces"]) for step in empty]


def test_count_final():
    reach = 4

    def settled(after):
        return sum(not c.isspace() for c in after) >= reach

    assert count_final(["ab", " cd", "ef", "g"], settled) == 1  # "cdefg" after "ab"; "efg" after " cd"
    assert count_final(["  ", "ab", " cdef"], settled) == 2  # leading whitespace follows "ab"
    assert count_final(["  ", "ab", " c"], settled) == 0
    assert count_final(["x", " ", "\n", "abcd"], settled) == 3  # whitespace follows the final "x"
    assert count_final(["ab", "cd"], lambda after: True, from_first_char=True) == 2


# ---- the real demo pair ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_parties():
    from tessy.config import SynthesizeConfig
    from tessy.runner import load_party

    config = SynthesizeConfig()
    return {role: load_party(role, getattr(config, role)) for role in ("student", "teacher")}


def demo_engine(parties, predictor_for, k=12, max_tokens=48):
    student, teacher = (dataclasses.replace(parties[role], predictor=predictor_for(role), k=k)
                        for role in ("student", "teacher"))
    return Engine(student, teacher, Limits(max_tokens=max_tokens), seed=5)


@pytest.mark.real_models
@pytest.mark.parametrize("predictor", ["token-local", "lexicon"])
def test_demo_pair_records_identical_and_cheaper(demo_parties, predictor):
    def make(lookahead_known: bool):
        if predictor == "token-local":
            return lambda role: TokenLocal() if lookahead_known else Blind()
        return lambda role: Wrapped(LexiconPredictor(), LexiconPredictor.lookahead_chars if lookahead_known else None)

    early = run_all(demo_engine(demo_parties, make(True)))
    late = run_all(demo_engine(demo_parties, make(False)))
    assert [comparable(r) for r in early] == [comparable(r) for r in late]
    generated_early, generated_late = sum(r.generated for r in early), sum(r.generated for r in late)
    kept = sum(r.generated - r.discarded for r in early)
    print(f"{predictor}: generated per kept token {generated_late / kept:.2f} -> {generated_early / kept:.2f}")
    assert generated_early < generated_late


LEXICON_WORDS = ("okay hmm wait well so let's see let me think about this i need to figure out the problem says "
                 "question is asking for that hold on first next now but if then and also we i to solve this "
                 "here's the plan some many much long as we mentioned earlier sure yes right , . ; : ! ? ... — - = ( ) "
                 "[ ] x def return print 12 3.5 otherwise").split()
LEXICON_PHRASES = ["let me think about this carefully", "this question is asking for that", "the problem says that",
                   "i'm not certain whether", "to solve the problem,", "let me write this down", "def f(x):",
                   "return x[0]", 'print("so")', "`so` (wait)", "otherwise   ,", "so many", "now = 3", "so.x", "well-known"]


LEXICON_CONTEXTS = ["", "Hello. ", "x = 1, ", "let me", "Okay, so", "the problem", "I think", "hmm", "and", "so",
                    "**", "1. ", "Wait,", "let's", "this question is", "To solve this"]


@pytest.mark.slow
def test_lexicon_final_verdicts_never_change():
    """Whatever follows (the rest of the text, or other words), a verdict `final_count` calls final
    stays: over contexts that end inside a phrase, too."""
    import random

    from tessy.predictors.lexicon import label_pieces

    predictor = LexiconPredictor()
    rng = random.Random(0)
    vocabulary = LEXICON_WORDS + LEXICON_PHRASES * 3

    def words(n: int) -> str:
        return "".join(rng.choice(vocabulary) + rng.choice([" ", " ", "", "\n", ", ", ". "]) for _ in range(n))

    for _ in range(300):
        text = words(12)
        pieces, i = [], 0
        while i < len(text):
            size = rng.randint(1, 5)
            pieces.append(text[i : i + size])
            i += size
        context = rng.choice(LEXICON_CONTEXTS)
        for m in range(1, len(pieces)):
            final = predictor.final_count(pieces[:m], context)
            now = label_pieces(context, pieces[:m])[:final]
            for later in (pieces, pieces[:m] + [words(2)]):
                assert label_pieces(context, later)[:final] == now, (context, pieces[:m], later, final)


@pytest.mark.parametrize("context, pieces, final, later", [
    ("", ["So", " m"], 0, ["So", " many", " ways"]),  # "So many" is no opener: "So" may still change
    ("Yes. ", [" and", " t"], 0, [" and", " then", " we"]),  # "and then" is
    ("", ["The", " problem"], 0, ["The", " problem", " says", " x"]),
    ("", ["I", " need", " to", " figure"], 0, ["I", " need", " to", " figure", " out", " x"]),
    ("let me", [" see", " the", " code"], 3, None),  # "let me see" is whole; no rule starts "the code"
    ("Okay, so", [" the", " answer", " is"], 3, None),  # "the answer" is not "the problem says"
])
def test_lexicon_verdicts_are_final_once_no_rule_can_still_match(context, pieces, final, later):
    """A verdict is final as soon as no match that could cover it can still change, not only
    after the 24 characters of look-ahead the longest rule needs."""
    from tessy.predictors.lexicon import label_pieces

    assert LexiconPredictor().final_count(pieces, context) == final
    if later is not None:  # what could follow changes a verdict that was not final
        assert label_pieces(context, later)[: len(pieces)] != label_pieces(context, pieces)


def turn_engine(student_tok, teacher_tok, turn_requests: bool, stream_chunk: int, fmt=None, k=8, **limits) -> Engine:
    fmt = fmt or PlainTestFormat()
    parties = [Party(role, ScriptedBackend(tok, script, role, stream_chunk=stream_chunk), fmt, TokenLocal(), k=k)
               for role, tok, script in (("student", student_tok, STUDENT_SCRIPT),
                                         ("teacher", teacher_tok, TEACHER_SCRIPT))]
    return Engine(*parties, Limits(**limits), speedups=Speedups(turn_requests=turn_requests))


@pytest.mark.parametrize("stream_chunk", [1, 5])  # 5: chunks that straddle the steps' ends
@pytest.mark.parametrize("thinking", [False, True])
def test_one_request_serves_a_turns_steps(smol_tokenizer, gemma_tokenizer, stream_chunk, thinking):
    """A turn that goes on past its step keeps its request: the same records as a request per
    step (a scripted model's tokens depend only on the sequence), in fewer requests."""
    fmt = ThinkTestFormat() if thinking else None
    limits = dict(max_tokens=150, max_answer_tokens=20) if thinking else dict(max_tokens=150)
    turn = run_all(turn_engine(smol_tokenizer, gemma_tokenizer, True, stream_chunk, fmt, k=3, **limits))
    step = run_all(turn_engine(smol_tokenizer, gemma_tokenizer, False, stream_chunk, fmt, k=3, **limits))
    assert [comparable(r) for r in turn] == [comparable(r) for r in step]
    assert sum(r.steps for r in turn) < sum(r.steps for r in step)
    if stream_chunk == 1:  # (a server that sends several tokens at once may have made a few more by the cut)
        assert sum(r.generated for r in turn) <= sum(r.generated for r in step)
    for result in turn:  # totals stay consistent
        assert result.discarded == result.generated - sum(span.tokens_own for span in result.spans)


class FailingAt(TokenLocal):
    def __init__(self, call: int):
        super().__init__()
        self.calls, self.failing_call = 0, call

    async def label(self, query: SpanQuery) -> list[bool]:
        self.calls += 1
        if self.calls == self.failing_call:
            raise RuntimeError("predictor fault")
        return await super().label(query)


@pytest.mark.parametrize("where", ["server", "predictor"])
def test_a_fault_during_a_turn_request_fails_its_sample_and_stops_the_request(smol_tokenizer, gemma_tokenizer, where):
    """A server or predictor fault while a turn's request is going on reaches the sample (the
    runner retries it); no request is left running."""
    engine = turn_engine(smol_tokenizer, gemma_tokenizer, True, 1, max_tokens=150)
    teacher = engine.parties["teacher"]
    if where == "server":
        teacher.backend.fail_on_call = lambda call: RuntimeError("server fault") if call == 2 else None
    else:  # mid-turn: the teacher's request waits for the loop
        engine.parties["teacher"] = dataclasses.replace(teacher, predictor=FailingAt(5))

    async def go():
        with pytest.raises(RuntimeError, match=f"{where} fault"):
            await engine.run("p0", [{"role": "user", "content": PROMPTS[0]}])
        for _ in range(5):  # a cancelled request closes its stream first
            await asyncio.sleep(0)
        return [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]

    assert asyncio.run(go()) == []


@pytest.mark.slow
@pytest.mark.parametrize("k", [8, 20])
def test_adaptive_k_same_records_fewer_tokens_without_streaming(smol_tokenizer, gemma_tokenizer, k):
    def engine(adaptive: bool) -> Engine:
        fmt = PlainTestFormat()
        parties = [Party(role, ScriptedBackend(tok, script, role, stream_chunk=0), fmt, TokenLocal(), k=k,
                         adaptive_k=adaptive)
                   for role, tok, script in (("student", smol_tokenizer, STUDENT_SCRIPT),
                                             ("teacher", gemma_tokenizer, TEACHER_SCRIPT))]
        return Engine(*parties, Limits(max_tokens=120))

    fixed, adaptive = engine(False), engine(True)
    results_fixed, results_adaptive = run_all(fixed), run_all(adaptive)
    assert [comparable(r) for r in results_adaptive] == [comparable(r) for r in results_fixed]
    assert sum(r.generated for r in results_adaptive) < sum(r.generated for r in results_fixed)
    assert fixed.k_used()["student"] == k or fixed.k_used()["student"] < k  # budget ends may ask for less
    assert adaptive.k_used()["student"] < fixed.k_used()["student"]


@pytest.mark.parametrize("method", ["teacher-only", "teacher-think"])
def test_a_single_model_write_stops_at_the_end_of_thinking(smol_tokenizer, gemma_tokenizer, method):
    """A model writing a section alone stops once its thinking ends (or a stop string comes): the
    text after the marker, which the record drops, is not generated; the records are the same."""
    from tessy.methods import run_method

    teacher_script = ("Two plus three is five. We check it twice, carefully.\n</think> The answer is five, "
                      "as the long explanation above shows in every detail. " * 3)

    def run_with(stream_chunk: int):
        fmt = ThinkTestFormat()
        student = Party("student", ScriptedBackend(smol_tokenizer, "The answer is 5.", "student",
                                                   stream_chunk=stream_chunk), fmt, TokenLocal(), k=8)
        teacher = Party("teacher", ScriptedBackend(gemma_tokenizer, teacher_script, "teacher",
                                                   stream_chunk=stream_chunk), fmt, TokenLocal(), k=8)
        engine = Engine(student, teacher, Limits(max_tokens=200, max_answer_tokens=30))
        return asyncio.run(run_method(engine, method, "s1", [{"role": "user", "content": PROMPTS[0]}]))

    streamed, whole = run_with(1), run_with(0)
    assert comparable(streamed) == comparable(whole)
    assert "</think>" in streamed.assistant_content and streamed.finish_reason in ("stop", "length")
    thinking = next(span for span in whole.spans if span.section == "thinking")
    assert thinking.generated > thinking.tokens_own + 10  # without streaming the answer after the marker is paid for
    streamed_thinking = next(span for span in streamed.spans if span.section == "thinking")
    assert streamed_thinking.generated <= streamed_thinking.tokens_own + 4  # the marker's tokens, no more
    assert streamed.generated < whole.generated
