"""Configs of the four `tessy predictor` steps: each field is a flag and a YAML key, with its help.

Importing this module is cheap (no torch): the CLI builds its parser from these classes.
Bounds are declared in each field (`option(..., min=1)`) and checked by `tessy.settings.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessy.config import ModelConfig
from tessy.settings import option

ROLES = ("student", "teacher")


def _roles_problems(roles: str) -> list[tuple[str, str]]:
    bad = [part for part in (p.strip() for p in roles.split(",")) if part and part not in ROLES]
    return [("roles", f"expected comma-separated roles from: {', '.join(ROLES)}; got {bad[0]!r}")] if bad else []


@dataclass
class SplitConfig:
    """How annotated segments are split; `train` and `eval` must use the same values (the
    defaults agree). The split is by response (source id and model), so segments cut from one
    response never end up on both sides."""

    test_fraction: float = option(0.2, "Share of responses held out for `eval` (the test split).", min=0, max=1)
    dev_fraction: float = option(0.1, "Share of responses used by `train` to tune the threshold and report dev scores.", min=0, max=1)
    split_seed: int = option(0, "Seed of the train/dev/test assignment of responses.", min=0)

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.test_fraction + self.dev_fraction >= 1:
            return [("dev_fraction", f"test_fraction + dev_fraction must be below 1 (some responses must be left to "
                                     f"train on), got {self.test_fraction} + {self.dev_fraction}")]
        return []


@dataclass
class SampleConfig:
    """`tessy predictor sample`: one model's thinking text, cut into random segments."""

    input: str = option("", "Prompts: a JSONL or Parquet file, or a local Hugging Face dataset folder.")
    output: str = option("runs/predictor-data/student", "Output folder: records.jsonl (the full responses, resumable) and segments.jsonl.")
    role: str = option("student", "Whose text this is: the predictor these segments train.", choices=ROLES)
    prompt_field: str = option("prompt", "Input field holding the prompt text.")
    messages_field: str = option("messages", "Input field holding a chat messages list (used when present).")
    id_field: str = option("id", "Input field holding a sample id (a hash of the prompt when absent).")
    system_prompt: str = option("", "System message prepended to every prompt (empty = none).")
    limit: int = option(0, "Use only the first N prompts (0 = all).", min=0)
    concurrency: int = option(8, "Responses in flight at once.", min=1)
    max_new_tokens: int = option(512, "Most tokens per response (thinking and answer).", min=1)
    segments_per_response: int = option(4, "Segments cut from each response's thinking text (fewer when it is short).", min=1)
    max_segments: int = option(0, "Most segments in all, taken in source-id order (0 = no limit). The paper: 100k per model.", min=0)
    min_segment_tokens: int = option(24, "Shortest segment, in the model's tokens (shorter thinking texts give no segment).", min=1)
    max_segment_tokens: int = option(96, "Longest segment, in the model's tokens.", min=1)
    seed: int = option(0, "Seed of the sampling and of the segment positions.", min=0)
    max_attempts: int = option(3, "Attempts per prompt across runs before it stays in failures.", min=1)
    overwrite: bool = option(False, "Start the output folder afresh even if it holds another config's responses.")
    progress: bool = option(True, "Show a progress bar.")
    generator: ModelConfig = field(
        default_factory=lambda: ModelConfig(model="", predictor=""),
        metadata={"help": "The model whose thinking is sampled (empty model = the demo model of --role; "
                          "format plain: the whole response counts as thinking; its predictor and k are not used)."},
    )

    def cross_checks(self) -> list[tuple[str, str]]:
        if self.min_segment_tokens > self.max_segment_tokens:
            return [("min_segment_tokens", f"must not exceed max_segment_tokens ({self.max_segment_tokens}), "
                                           f"got {self.min_segment_tokens}")]
        return []


@dataclass
class AnnotateConfig:
    """`tessy predictor annotate`: style spans of each segment, from an annotator."""

    input: str = option("", "Segments: segments.jsonl files or `predictor sample` folders, comma-separated.")
    output: str = option("runs/predictor-data/annotations", "Output folder: records.jsonl (annotated segments), failures.jsonl, run.json.")
    annotator: str = option("lexicon", "Annotator: lexicon (the lexicon predictor's rules, offline) or llm (a model, see --llm.*; "
                                       "--llm.backend openai for a vLLM / SGLang / llama.cpp server).",
                           choices=("lexicon", "llm"), aliases=("openai",))
    max_answer_tokens: int = option(1024, "Most tokens of one answer of the llm annotator (its thinking included).", min=1)
    max_attempts: int = option(3, "Answers asked per segment before it is recorded as failed (a bad answer is retried).", min=1)
    concurrency: int = option(16, "Segments annotated at once.", min=1)
    limit: int = option(0, "Annotate only the first N segments (0 = all).", min=0)
    overwrite: bool = option(False, "Start the output folder afresh even if another config annotated into it.")
    progress: bool = option(True, "Show a progress bar.")
    llm: ModelConfig = field(
        default_factory=lambda: ModelConfig(model="", predictor="", temperature=0.0),
        metadata={"help": "The llm annotator: the model asked (the paper: the teacher); its predictor and k are not used."},
    )


@dataclass
class TrainConfig(SplitConfig):
    """`tessy predictor train`: a 2-class token classifier (style / capability) from annotations."""

    data: str = option("runs/predictor-data/annotations", "Annotations: `predictor annotate` folders or their records.jsonl, comma-separated.")
    output: str = option("runs/predictor", "Output folder: the trained checkpoint (use it as --student.predictor / --teacher.predictor).")
    base_model: str = option("smollm2-135m-instruct", "Model to start from: a causal LM or encoder (demo alias, folder or hub name). The paper: Qwen3-0.6B-Base.")
    num_layers: int = option(0, "Keep only the first N transformer layers of the base model (0 = all): smaller and faster, e.g. for tests.", min=0)
    roles: str = option("", "Train on segments of these roles only (student, teacher; comma-separated; empty = both).")
    epochs: float = option(3.0, "Passes over the training segments (ignored when --max-steps is set).", gt=0)
    max_steps: int = option(0, "Optimizer steps in all (0 = from --epochs).", min=0)
    batch_size: int = option(8, "Segments per optimizer step.", min=1)
    learning_rate: float = option(5e-5, "Peak learning rate (AdamW; linear warm-up, then linear decay).", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0)
    warmup_fraction: float = option(0.05, "Share of the steps spent warming the learning rate up.", min=0, max=1)
    max_length: int = option(256, "Longest training sequence in the base model's tokens (longer segments are truncated).", min=2)
    style_weight: float = option(0.0, "Loss weight of the style class against 1 for capability (0 = automatic: their inverse frequency, at most 10).", min=0)
    tune_threshold: bool = option(True, "Pick the style-probability threshold with the best dev F1 and fold it into the head's bias (plain argmax then applies it).")
    save_every: int = option(50, "Save a resumable checkpoint every N steps (0 = only at the end).", min=0)
    log_every: int = option(10, "Append the mean loss to train_log.jsonl every N steps (0 = never).", min=0)
    device: str = option("auto", "auto, cpu or cuda.")
    seed: int = option(0, "Seed of the head initialisation and of the data order.", min=0)
    overwrite: bool = option(False, "Start afresh even if the output folder holds another config's training.")
    progress: bool = option(True, "Show a progress bar with the loss.")

    def cross_checks(self) -> list[tuple[str, str]]:
        return super().cross_checks() + _roles_problems(self.roles)


@dataclass
class EvalConfig(SplitConfig):
    """`tessy predictor eval`: token F1 of the style class and boundary accuracy, per predictor."""

    data: str = option("runs/predictor-data/annotations", "Annotations: `predictor annotate` folders or their records.jsonl, comma-separated.")
    predictors: str = option("lexicon,chance", "Predictors to compare, comma-separated: lexicon, chance, checkpoint folders, or "
                                                  "annotations:FOLDER (another annotation of the same segments, e.g. an "
                                                  "LLM's); NAME=SPEC names one.")
    split: str = option("test", "Which segments: test (held out by train), dev, train or all.",
                       choices=("test", "dev", "train", "all"))
    roles: str = option("", "Evaluate segments of these roles only (comma-separated; empty = both).")
    tokenizer: str = option("", "Cut segments into pieces with this model's tokenizer (empty = each segment's own model, as in synthesize).")
    k: int = option(20, "Span length in pieces, as in synthesize (the paper's k).", min=1)
    starts_per_segment: int = option(8, "Random span starts simulated per segment for the boundary accuracy.", min=1)
    tolerance: int = option(2, "A predicted cut this many pieces from the annotated one counts as 'near'.", min=0)
    limit: int = option(0, "Use only the first N segments of the split (0 = all).", min=0)
    seed: int = option(0, "Seed of the span starts and of the chance predictor.", min=0)
    output: str = option("", "Also write the results as JSON to this file (empty = print only).")

    def cross_checks(self) -> list[tuple[str, str]]:
        return super().cross_checks() + _roles_problems(self.roles)
