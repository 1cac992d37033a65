"""`tessy predictor annotate`: the style spans of each segment, from an annotator (paper Table 2).

Owns: the annotation prompt (`PROMPT_TEMPLATE`, versioned by `PROMPT_VERSION`), the `Annotator`
interface and its implementations, retries, and the annotation output folder. Parsing an
annotator's answer (`parse_answer`) and locating the phrases it lists in the segment
(`locate_spans`: in order, exact first, then tolerant of whitespace, quotes and case) are
`spans.py`.

- `Annotator`: `async annotate(text) -> str`, the raw answer (a JSON array of verbatim phrases
  is asked for). `lexicon` answers with the lexicon predictor's rules (`find_style_spans`;
  offline, deterministic), `scripted` replays given answers (tests), `llm` asks a model through
  any backend: in process (`hf`) or an OpenAI-compatible server (`openai`: vLLM, SGLang,
  llama.cpp), the prompt rendered in the model's own chat format.
- Found spans are kept; the phrases not found are counted (`not_found`, `not_found_texts`).
- Retries: an annotator error, an unparseable answer, or an answer none of whose phrases occur
  in the segment is retried up to `max_attempts` answers; then the segment goes to
  ``failures.jsonl`` with the last reason. An empty array is a valid answer (no style text).

Output folder (`tessy.store.RunOutput`: append-only, exactly-once, resumable, one config per
folder): ``records.jsonl`` one annotated segment per line (schema in the package doc, ``id`` =
segment id), ``failures.jsonl``, ``rejects.jsonl`` (unusable segment lines), ``run.json``. A rerun
skips annotated segments and retries failed ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from tessy.predictor_training.config import AnnotateConfig
from tessy.predictor_training.spans import AnswerError, locate_spans, parse_answer

log = logging.getLogger(__name__)

PROMPT_VERSION = "tessy-style-spans-v1"

# The project's own wording of the instructions in the paper's Table 2.
PROMPT_TEMPLATE = """\
You analyse the style of reasoning text. List every span of the text below that is a \
transitional, filler or tone-setting phrase.

Count as such a span any phrase or short sentence that:
- shows hesitation, tone or attitude (for example "well", "okay", "so", "hmm", "let's see", "I think");
- moves on to something or sets it up (for example "to begin with", "in this case", "for example", "but if");
- narrates or connects the steps rather than carrying them out (for example "let me check", "the problem says").

Do not count:
- the reasoning itself: deductions, explanations, conclusions;
- code, formulas, numbers, or what they describe;
- the steps that actually solve the problem.

Answer with a JSON array of strings and nothing else:
1. copy every span character for character from the text;
2. list the spans in the order they appear;
3. answer [] if there is none;
4. no explanation, no markdown, no other text.

<text>
{text}
</text>"""


def build_prompt(text: str) -> str:
    return PROMPT_TEMPLATE.replace("{text}", text)


class Annotator(ABC):
    """Lists the style phrases of a segment; returns the raw answer (parsed by the caller)."""

    name: str = "annotator"
    model: str = ""

    @abstractmethod
    async def annotate(self, text: str) -> str:
        """The annotator's raw answer for segment `text`."""

    async def aclose(self) -> None:
        """Free resources (connections)."""


class LexiconAnnotator(Annotator):
    """The lexicon predictor's rules as an annotator: offline, instant, deterministic."""

    name = "lexicon"

    async def annotate(self, text: str) -> str:
        from tessy.predictors.lexicon import find_style_spans

        return json.dumps([text[start:end] for start, end in find_style_spans(text)], ensure_ascii=False)


class ScriptedAnnotator(Annotator):
    """Replays answers, for tests: `answers` is a list (consumed in order, the last one repeated)
    or a function `(text, call_number) -> str`; an answer that is an exception is raised."""

    name = "scripted"

    def __init__(self, answers: list | Callable[[str, int], str]):
        self.answers = answers
        self.calls = 0

    async def annotate(self, text: str) -> str:
        self.calls += 1
        if callable(self.answers):
            answer = self.answers(text, self.calls)
        else:
            answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class LLMAnnotator(Annotator):
    """A model asked through any backend (`hf` in process, `openai` for a vLLM / SGLang /
    llama.cpp server): the prompt is one user message rendered in the model's own chat format;
    the answer is what follows the thinking section for thinking families, else the response.
    Each call uses its own sequence id and seed, so a retry may answer differently when the
    temperature is above 0."""

    name = "llm"

    def __init__(self, party, max_answer_tokens: int = 1024, chunk: int = 256):
        self.party = party
        self.model = party.backend.model_name
        self.max_answer_tokens = max_answer_tokens
        self.chunk = chunk
        self.calls = 0

    async def annotate(self, text: str) -> str:
        party = self.party
        self.calls += 1
        seq_id = f"annotate/{self.calls}"
        prompt = party.format.prompt_ids(party.tokenizer, [{"role": "user", "content": build_prompt(text)}])
        sampling = dataclasses.replace(party.sampling, seed=self.calls)
        new: list[int] = []
        stop = party.stop_ids()
        try:
            while len(new) < self.max_answer_tokens:
                n = min(self.chunk, self.max_answer_tokens - len(new), party.backend.max_context - len(prompt) - len(new))
                if n <= 0:
                    break
                generation = await party.backend.generate(seq_id, prompt + new, n, sampling, stop)
                ids = list(generation.token_ids)
                if ids and generation.finish_reason == "stop" and ids[-1] in stop:
                    new += ids[:-1]
                    break
                new += ids
                if not ids:
                    break
        finally:
            party.backend.release(seq_id)
        answer = party.tokenizer.decode(new, skip_special_tokens=True)
        if party.format.has_thinking:
            split = party.format.split_thinking(answer)
            if split is not None:
                answer = split[1]
        for stop_string in party.format.stop_strings:
            answer = answer.split(stop_string)[0]
        return answer

    async def aclose(self) -> None:
        await self.party.backend.aclose()


ANNOTATORS = ("lexicon", "llm")


def load_annotator(config: AnnotateConfig) -> Annotator:
    if config.annotator == "lexicon":
        return LexiconAnnotator()
    if config.annotator in ("llm", "openai"):
        from tessy.runner import load_party

        llm = dataclasses.replace(config.llm, predictor="")
        if config.annotator == "openai":
            llm.backend = "openai"
        if not llm.model:
            raise ValueError("llm.model: the llm annotator needs a model (--llm.model; the paper asks the teacher)")
        return LLMAnnotator(load_party("annotator", llm), config.max_answer_tokens)
    raise ValueError(f"annotator: unknown annotator {config.annotator!r}; available: {', '.join(ANNOTATORS)}")


# -- one segment -----------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    attempts: int
    record: dict | None = None
    reason: str = ""


async def annotate_segment(annotator: Annotator, segment: dict, max_attempts: int = 3) -> Outcome:
    """Ask `annotator` about one segment, retrying bad answers (see the module doc)."""
    text = segment["text"]
    reason = "no attempt made"
    for attempt in range(1, max(1, max_attempts) + 1):
        try:
            raw = await annotator.annotate(text)
        except Exception as exc:  # a transport error, a timeout: ask again
            reason = f"annotator error: {type(exc).__name__}: {exc}"
            continue
        try:
            phrases = parse_answer(raw)
        except AnswerError as exc:
            reason = f"unparseable answer: {exc}"
            continue
        spans, missing = locate_spans(text, phrases)
        if phrases and not spans:
            reason = f"none of the {len(phrases)} phrases occur in the segment (e.g. {phrases[0][:60]!r})"
            continue
        record = {
            **segment,
            "id": segment["segment_id"],
            "spans": [list(span) for span in spans],
            "span_texts": [text[a:b] for a, b in spans],
            "requested": len(phrases),
            "not_found": len(missing),
            "not_found_texts": missing,
            "annotator": annotator.name,
            "annotator_model": annotator.model,
            "prompt_version": PROMPT_VERSION,
            "attempts": attempt,
            "answer": raw if len(raw) <= 4000 else raw[:4000] + "…",
        }
        return Outcome(True, attempt, record)
    return Outcome(False, max(1, max_attempts), reason=reason)


# -- a whole run -----------------------------------------------------------------------------


@dataclass
class AnnotateReport:
    output: str
    written: int = 0
    failed: int = 0
    rejected: int = 0
    skipped_done: int = 0
    spans: int = 0
    not_found: int = 0
    requested: int = 0


def fingerprint_fields(config: AnnotateConfig, annotator: Annotator) -> dict:
    fields = {"annotator": annotator.name, "model": annotator.model, "prompt_version": PROMPT_VERSION}
    if isinstance(annotator, LLMAnnotator):
        fields.update(temperature=config.llm.temperature, top_p=config.llm.top_p, format=config.llm.format)
    return fields


async def annotate_async(config: AnnotateConfig, annotator: Annotator | None = None) -> AnnotateReport:
    """Annotate every segment of `config.input` not yet done in `config.output`."""
    from tessy.predictor_training.data import read_segments
    from tessy.store import RunOutput, config_fingerprint

    if config.concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    segments = read_segments(config.input)
    annotator = annotator or load_annotator(config)
    fingerprint = config_fingerprint(fingerprint_fields(config, annotator), ignore=())
    output = RunOutput(config.output, fingerprint, dataclasses.asdict(config), overwrite=config.overwrite)
    report = AnnotateReport(output=config.output)
    bar = None
    try:
        todo, seen = [], set()
        for line, segment in enumerate(segments, 1):
            if config.limit and line > config.limit:
                break
            sid = segment.get("segment_id") if isinstance(segment, dict) else None
            if not sid or not isinstance(segment.get("text"), str):
                output.write_reject(line, f"line {line}: a segment needs 'segment_id' and 'text'", sid)
                report.rejected += 1
            elif sid in seen:
                output.write_reject(line, f"line {line}: duplicate segment id {sid!r}", sid)
                report.rejected += 1
            elif output.is_done(sid):
                seen.add(sid)
                report.skipped_done += 1
            else:
                seen.add(sid)
                todo.append(segment)
        if config.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="segment", desc="annotate", dynamic_ncols=True)
        queue: asyncio.Queue = asyncio.Queue()
        for segment in todo:
            queue.put_nowait(segment)

        async def work() -> None:
            while not queue.empty():
                segment = queue.get_nowait()
                outcome = await annotate_segment(annotator, segment, config.max_attempts)
                sid = segment["segment_id"]
                if outcome.ok:
                    if output.write_record(outcome.record):  # no validate hook given: not a synthesis record
                        report.written += 1
                        report.spans += len(outcome.record["spans"])
                        report.requested += outcome.record["requested"]
                        report.not_found += outcome.record["not_found"]
                else:
                    output.write_failure(sid, outcome.reason, output.failed_attempts(sid) + 1)
                    report.failed += 1
                if bar is not None:
                    bar.set_postfix(failed=report.failed, not_found=report.not_found, refresh=False)
                    bar.update(1)

        await asyncio.gather(*(work() for _ in range(min(config.concurrency, max(1, len(todo))))))
    finally:
        if bar is not None:
            bar.close()
        output.close()
        await annotator.aclose()
    return report


def annotate(config: AnnotateConfig, annotator: Annotator | None = None) -> AnnotateReport:
    return asyncio.run(annotate_async(config, annotator))
