"""The speed layer changes no record: the same prompts with every speed-up on, with each one off,
and with all off (the paper's generate-then-cut, `PAPER`) give the same records, same seeds.

What the README promises may differ is left out of the comparison: the tokens generated and
discarded past the cuts (stopping at the cut, adaptive k) and the requests made (`steps`: one
request per turn, adaptive k), and the timings. Scripted models on the demo pair's real
tokenizers (different vocabularies), streaming in chunks of 1 and 5 tokens and not at all, with
the lexicon and with a token classifier (a tiny causal model whose attention mixes the text, so
a verdict depends on what came before it); and the real demo pair in process. (Reading the
prompt ahead, `read_ahead`, does nothing in process; over a server, test_prompt_cache.)
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.engine import PAPER, Engine, Limits, Party, Speedups
from tessy.predictors import LexiconPredictor, load_predictor
from tests.test_engine import PlainTestFormat, ThinkTestFormat

PROMPTS = ["What is 2+3?", "Write a function that reverses a list.", "Explain why the sky is blue."]
STUDENT_SCRIPT = "Okay, so wait. Hmm, let me see, the sum. Well, okay wait so hmm, fine. So " * 4
TEACHER_SCRIPT = ("We add two and three to get five. Wait, then we check it: 2 + 3 = 5. Okay, so the result "
                  "holds.\n\nLet me think about this carefully. The list [1, 2] reversed is [2, 1]. ") * 3

#: The speed-ups on (the default), each one off, and all off.
SETTINGS = {"on": Speedups(), "paper": PAPER,
            **{f"no-{name}": dataclasses.replace(Speedups(), **{name: False})
               for name in ("stop_at_cut", "turn_requests", "predictor_schedule")}}


def record_part(result, engine: Engine) -> dict:
    """A sample's record, less what the speed layer may change (see the module docstring)."""
    from tessy.records import build_record

    record = build_record(result, engine, "tessy", "fp")
    record.pop("timings")
    for key in ("generated", "discarded", "steps"):
        record["totals"].pop(key)
    for span in record["spans"]:
        span.pop("generated"), span.pop("discarded")
    return record


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory, smol_tokenizer):
    """A tiny causal token classifier with attention at work, its verdicts far from ties."""
    import torch
    import transformers as tf

    path = tmp_path_factory.mktemp("speed") / "classifier"
    config = tf.LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, num_labels=2, tessy_label_offset=0,
                            tessy_style_label_id=1)
    torch.manual_seed(3)
    model = tf.LlamaForTokenClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 2.0)  # float rounding cannot flip a verdict
    model.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


def run_records(parties: dict[str, Party], predictor: str, classifier: str, speedups: Speedups, fmt, limits,
                prompts=PROMPTS, seed: int = 0) -> list[dict]:
    async def go():
        predictors = {role: LexiconPredictor() if predictor == "lexicon" else load_predictor(classifier)
                      for role in ("student", "teacher")}
        engine = Engine(*(dataclasses.replace(parties[role], predictor=predictors[role], format=fmt or parties[role].format,
                                              predictor_name=predictor) for role in ("student", "teacher")),
                        Limits(**limits), seed=seed, speedups=speedups)
        try:
            results = await asyncio.gather(*(engine.run(f"p{i}", [{"role": "user", "content": prompt}])
                                              for i, prompt in enumerate(prompts)))
        finally:
            for each in predictors.values():
                await each.aclose()
        return [record_part(result, engine) for result in results], sum(result.generated for result in results)

    return asyncio.run(go())


def scripted(smol_tokenizer, gemma_tokenizer, stream_chunk: int, k: int) -> dict[str, Party]:
    return {role: Party(role, ScriptedBackend(tok, script, role, stream_chunk=stream_chunk), PlainTestFormat(), None,
                        k=k)
            for role, tok, script in (("student", smol_tokenizer, STUDENT_SCRIPT),
                                      ("teacher", gemma_tokenizer, TEACHER_SCRIPT))}


@pytest.mark.parametrize("predictor", ["lexicon", "classifier"])
@pytest.mark.parametrize("stream_chunk, k, thinking", [(1, 8, False), (5, 20, True), (0, 8, False), (1, 3, True)])
def test_records_are_the_same_with_the_speed_layer_on_and_off(smol_tokenizer, gemma_tokenizer, classifier_path,
                                                             predictor, stream_chunk, k, thinking):
    fmt = ThinkTestFormat() if thinking else None
    limits = dict(max_tokens=120, max_answer_tokens=20) if thinking else dict(max_tokens=120)
    parties = scripted(smol_tokenizer, gemma_tokenizer, stream_chunk, k)
    runs = {name: run_records(parties, predictor, classifier_path, speedups, fmt, limits)
            for name, speedups in SETTINGS.items()}
    paper, paper_generated = runs["paper"]
    assert sum(len(record["spans"]) for record in paper) >= 2 * len(PROMPTS)  # the cuts are at work
    for name, (records, _) in runs.items():
        assert records == paper, name
    if stream_chunk in (0, 1) and k >= 8:  # stopping at the cut (adaptive k, without streaming) saves tokens
        assert runs["on"][1] < paper_generated


@pytest.mark.real_models
@pytest.mark.parametrize("predictor", ["lexicon", "classifier"])
def test_the_demo_pair_writes_the_same_records_with_the_speed_layer_on_and_off(classifier_path, predictor):
    """The real pair in process (its seeded draws depend only on the sequence and position)."""
    from tessy.config import SynthesizeConfig
    from tessy.runner import load_party

    config = SynthesizeConfig()
    parties = {role: dataclasses.replace(load_party(role, getattr(config, role)), k=12) for role in ("student", "teacher")}
    # The random classifier hands over every few tokens (each hand-over a forward pass of its own):
    # a shorter budget keeps it to seconds.
    limits = dict(max_tokens=48 if predictor == "lexicon" else 20)
    runs = {name: run_records(parties, predictor, classifier_path, SETTINGS[name], None, limits, seed=5)
            for name in ("on", "paper")}
    assert runs["on"][0] == runs["paper"][0]
    assert runs["on"][1] < runs["paper"][1]


def test_the_speed_ups_are_settings_that_leave_the_fingerprint_alone(smol_tokenizer, gemma_tokenizer):
    from tessy.config import SynthesizeConfig
    from tessy.runner import build_engine
    from tessy.settings import config_from_sources

    config = config_from_sources(SynthesizeConfig, flags={"speed.stop_at_cut": False, "speed.read_ahead": False})
    assert config.data_fields() == SynthesizeConfig().data_fields()  # a run may resume with other speed-ups
    engine = build_engine(config, parties=scripted(smol_tokenizer, gemma_tokenizer, 1, 8))
    assert engine.steps.speedups == Speedups(stop_at_cut=False, read_ahead=False)
    assert build_engine(SynthesizeConfig(), parties=engine.parties).steps.speedups == Speedups()
