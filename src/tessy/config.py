"""Typed configuration of `tessy synthesize`: the `ModelConfig` and `SynthesizeConfig` dataclasses.

Owns tessy's own settings: every field with its default, help text and bounds (declared with
`tessy.settings.option`), the accepted names of formats, backends, prompt modes and methods
(read from their registries), the rules across fields that do not depend on a model
(`cross_checks`: an openai backend needs a url), and which fields shape the data: each field
says so (`shapes_data=False` for paths, transport, distribution and the loop's speed-ups,
`SpeedConfig`), and `SynthesizeConfig.data_fields`, the part a run's fingerprint covers, is
derived from that.

The machinery (flags, YAML, `validate`, `ConfigError`) is `tessy.settings`: every field becomes a
flag (`--max-tokens`, nested as `--teacher.model`), a YAML file gives defaults, flags override
it, and a bad value is refused before a command has written anything. Rules that need the model
(e.g. the thinking budget of a thinking format) are checked where it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessy.backends.openai import PROMPT_MODES
from tessy.formats import ALIASES, FORMATS
from tessy.methods import METHODS
from tessy.models import STUDENT_DEMO, TEACHER_DEMO
from tessy.settings import WHEN_SET, JsonMapping, data_fields, option

#: Accepted names, read from the registries (none of them imports torch, transformers or aiohttp,
#: so --help stays cheap).
FORMAT_CHOICES = ("auto", *FORMATS)
FORMAT_ALIASES = tuple(ALIASES)
BACKEND_CHOICES = ("hf", "openai")
PROMPT_MODE_CHOICES = PROMPT_MODES
METHOD_CHOICES = METHODS
EXECUTOR_CHOICES = ("local", "ray")


@dataclass
class ModelConfig:
    """One side of the collaboration: a model, how it is served, how its spans are cut."""

    model: str = option("", "Model: a demo alias (smollm2-135m-instruct, gemma3-270m), a local folder, or a hub name.")
    format: str = option("auto", "Chat format (auto detects it from the tokenizer).",
                         choices=FORMAT_CHOICES, aliases=FORMAT_ALIASES, ignore_case=True)
    backend: str = option("hf", "Backend: hf (in-process transformers) or openai (an OpenAI-compatible server: "
                                "vLLM, SGLang, llama.cpp; see the url, served_model_name and tokenizer options).",
                          choices=BACKEND_CHOICES, shapes_data=False)
    device: str = option("auto", "Device for the hf backend: auto, cpu or cuda.", shapes_data=False)
    predictor: str = option("lexicon", "Boundary predictor: 'lexicon' or a token-classification checkpoint folder.")
    predictor_cache_mb: float = option(1024.0, "Classifier predictor: MiB of key/value cache it keeps so it reads only "
                                               "what is new of each sample in flight (0 = read every window whole).",
                                       min=0, shapes_data=False)
    voice: str = option("", "Few-shot preamble this model alone sees before every prompt: a built-in voice "
                            "(think-aloud, think-steps) or a JSON file of messages; records keep the plain "
                            "prompt (README: A pair that thinks out loud).", shapes_data=WHEN_SET)
    k: int = option(20, "Tokens generated per step before the predictor cuts (the paper's k).", min=1)
    adaptive_k: bool = option(True, "Ask a backend that cannot stop a request part-way (a server without streaming) "
                                    "for fewer than k tokens per request, about twice this model's recent span "
                                    "length; the step, its cut and so the record stay the same (a server's draws "
                                    "may differ). In process the request stops at the cut instead.", shapes_data=False)
    temperature: float = option(0.7, "Sampling temperature (0 = greedy).", min=0)
    top_p: float = option(0.95, "Nucleus sampling threshold.", gt=0, max=1)
    top_k: int = option(0, "Top-k sampling (0 = off).", min=0)
    max_context: int = option(0, "Context limit in this model's tokens (0 = from the model config).", min=0)
    max_batch: int = option(8, "Most sequences one forward pass decodes together (hf backend).", min=1,
                            shapes_data=False)
    # The openai backend (tessy.backends.openai): a model behind /v1/completions.
    url: str = option("", "openai backend: server base URL; several comma-separated URLs are replicas.",
                      shapes_data=False)
    served_model_name: str = option("", "openai backend: model name sent to the server (empty = the one it serves).",
                                    shapes_data=WHEN_SET)
    tokenizer: str = option("", "openai backend: local tokenizer (folder, cached hub name or demo alias; empty = model).",
                            shapes_data=WHEN_SET)
    prompt_mode: str = option("auto", "openai backend: token_ids (vLLM, SGLang), text (llama.cpp) or auto (probe).",
                              choices=PROMPT_MODE_CHOICES, shapes_data=WHEN_SET)
    api_key_env: str = option("", "openai backend: environment variable holding the API key (never written anywhere).",
                              shapes_data=False)
    api_key: str = option("", "openai backend: API key given literally (prefer api_key_env; redacted from run.json).",
                          shapes_data=False)
    headers: JsonMapping = option({}, "openai backend: extra HTTP headers (a YAML mapping or a JSON object).",
                                  values=str, shapes_data=False)
    extra_body: JsonMapping = option({}, "openai backend: extra fields merged into every request body (e.g. min_p).",
                                     shapes_data=WHEN_SET)
    max_in_flight: int = option(256, "openai backend: most requests of this role in flight at once (all replicas).",
                                min=1, shapes_data=False)
    timeout_s: float = option(600.0, "openai backend: seconds before a request times out (it is then retried).", gt=0,
                              shapes_data=False)
    max_retries: int = option(5, "openai backend: retries per request on timeouts, connection errors, 429 and 5xx.",
                              min=0, shapes_data=False)
    unavailable_wait_s: float = option(300.0, "openai backend: seconds to wait while every server of this role is "
                                              "down (requests pause, spending no attempt) before the run stops.", gt=0,
                                       shapes_data=False)
    stream: str = option("auto", "openai backend: stream tokens so a request stops at the predictor's cut: auto "
                                 "(when a probe shows the server streams), on, off.", choices=("auto", "on", "off"))
    slots: int = option(0, "openai backend: llama.cpp slots per server, for id_slot (0 = from /props when the "
                           "server says).", min=0)

    def cross_checks(self) -> list[tuple[str, str]]:
        """(field, problem) pairs for rules across fields."""
        if self.backend != "openai" or not isinstance(self.url, str):
            return []
        urls = [part.strip() for part in self.url.split(",") if part.strip()]
        if not urls:
            return [("url", "the openai backend needs the server's base URL (e.g. http://localhost:8000)")]
        bad = [u for u in urls if not u.lower().startswith(("http://", "https://"))]
        if bad:
            return [("url", f"expected http:// or https:// URLs, got {bad[0]!r}")]
        return []


@dataclass
class SpeedConfig:
    """The speed-ups of the cooperative loop (`tessy.engine.speed`): none changes where a span is
    cut, so records stay the same; only tokens generated past the cuts and requests made shrink."""

    stop_at_cut: bool = option(True, "Stream each step and stop its request once the cut is certain (the predictor's "
                                     "verdicts up to it can no longer change); off: every step generates all its k "
                                     "tokens, then is cut (the paper's generate-then-cut).")
    turn_requests: bool = option(True, "Over a streaming backend, one request serves all the steps of a turn (they are "
                                       "still cut k tokens at a time); off: a request per step.")
    predictor_schedule: bool = option(True, "Ask a costly predictor (a classifier) only at a few token counts per step "
                                            "(1, 2, where turns typically end, then doubling); off: at every token, "
                                            "like the lexicon.")
    read_ahead: bool = option(True, "Have the teacher's server read each prompt while the student writes the first "
                                    "turn (servers that keep a sample's prefix); off: it reads the prompt with its "
                                    "first request.")


@dataclass
class SynthesizeConfig:
    """`tessy synthesize`: prompts in, cooperative records out."""

    input: str = option("", "Prompts: a JSONL, JSON or Parquet file, a Hugging Face dataset folder (save_to_disk, or a "
                            "repository as hf download writes it), or a Hub dataset name ORG/NAME[:SUBSET] (read "
                            "from the local cache when offline or the Hub cannot be reached).", shapes_data=False)
    output: str = option("runs/tessy", "Output folder (records.jsonl, failures.jsonl, rejects.jsonl, run.json).",
                         shapes_data=False)
    method: str = option("tessy", "Data method: tessy, or one of the paper's baselines (README: Other data methods).",
                        choices=METHOD_CHOICES)
    candidates: int = option(5, "teacher-score: student candidates per prompt; the teacher scores each, the best is kept.",
                             min=1, shapes_data=lambda config: config.method == "teacher-score")
    prompt_field: str = option("prompt", "Input field holding the prompt text.")
    messages_field: str = option("messages", "Input field holding a chat messages list (used when present).")
    id_field: str = option("id", "Input field holding a sample id (a hash of the prompt when absent).")
    split: str = option("", "Split to read from a dataset folder or Hub dataset (empty = its only split, or train).",
                        shapes_data=False)
    system_prompt: str = option("", "System message prepended to every prompt (empty = none).")
    max_prompt_chars: int = option(200_000, "Longest prompt in characters (all turns); a longer one is rejected "
                                            "before it is tokenized.", min=1, shapes_data=False)
    limit: int = option(0, "Use only the first N prompts (0 = all).", min=0, shapes_data=False)
    concurrency: int = option(8, "Samples in flight at once.", min=1, shapes_data=False)
    max_tokens: int = option(2048, "Most response tokens per sample (student tokenizer), thinking and answer.", min=1)
    max_answer_tokens: int = option(512, "Most tokens of the final answer (student's own tokens).", min=1)
    max_spans: int = option(400, "Most spans per sample before it ends with reason max_spans.", min=1)
    max_attempts: int = option(3, "Attempts per sample across runs before it stays in failures.", min=1,
                               shapes_data=False)
    seed: int = option(0, "Base seed; each sample's sampling seed derives from it and the sample id.", min=0)
    overwrite: bool = option(False, "Start the output folder afresh even if it holds another config's run.",
                             shapes_data=False)
    progress: bool = option(True, "Show a progress bar.", shapes_data=False)
    journal_sync_s: float = option(5.0, "method tessy: OUTPUT/journal.jsonl gets each closed span as it is written, so a "
                                        "restart resumes a sample mid-trace; it is fsynced at most this many seconds "
                                        "apart (0 = after every span; a kill -9 loses nothing either way, a machine "
                                        "crash at most this much).", min=0, shapes_data=False)
    # Past one machine (tessy.shards, tessy.ray_executor; README: Past one machine).
    shard: str = option("", "Run only shard I of N, written I/N with 0 <= I < N: the prompts whose id hashes to I "
                            "(stable across runs and machines). Give each shard its own --output; `tessy merge` "
                            "joins them. Empty = every prompt.", shapes_data=False)
    executor: str = option("local", "local: this process runs the prompts; ray: --ray-shards Ray tasks each run one "
                                    "shard into OUTPUT.shards/I-of-N, then they are merged into OUTPUT.",
                           choices=EXECUTOR_CHOICES, shapes_data=False)
    ray_shards: int = option(2, "executor ray: how many shards (Ray tasks) the prompts are split into.", min=1,
                             shapes_data=False)
    ray_num_cpus: float = option(1.0, "executor ray: CPUs Ray reserves for each task.", min=0, shapes_data=False)
    ray_num_gpus: float = option(0.0, "executor ray: GPUs Ray gives each task (for the in-process hf backend).", min=0,
                                 shapes_data=False)
    ray_max_retries: int = option(3, "executor ray: times Ray starts a shard again when its worker or node dies (it "
                                     "resumes where it stopped: no record twice); a shard that fails otherwise stops "
                                     "the run at once.", min=0, shapes_data=False)
    ray_address: str = option("", "executor ray: the Ray cluster to join (empty = $RAY_ADDRESS if set, else a new "
                                  "local one).", shapes_data=False)
    speed: SpeedConfig = field(
        default_factory=SpeedConfig,
        metadata={"help": "method tessy: the loop's speed-ups (README: How it works); they change no record.",
                  "shapes_data": False},
    )
    teacher: ModelConfig = field(
        default_factory=lambda: ModelConfig(model=TEACHER_DEMO),
        metadata={"help": "The teacher: writes the capability (reasoning) spans."},
    )
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(model=STUDENT_DEMO),
        metadata={"help": "The student: writes the style spans and the final answer."},
    )

    def data_fields(self) -> dict[str, Any]:
        """The fields that shape the data (fingerprinted), as each field declares (`shapes_data`)."""
        return data_fields(self)

    def cross_checks(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("prompt_field", "messages_field", "id_field"):
            if isinstance(getattr(self, key), str) and not getattr(self, key).strip():
                problems.append((key, "must not be empty"))
        if isinstance(self.shard, str) and self.shard:
            from tessy.shards import parse_shard

            try:
                parse_shard(self.shard)
            except ValueError as exc:
                problems.append(("shard", str(exc)))
            if self.executor == "ray":
                problems.append(("shard", "--executor ray makes its own shards (--ray-shards); leave shard empty"))
        return problems
