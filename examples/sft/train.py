"""Fine-tune the student on a tessy export with TRL's SFTTrainer, on TRL's own parser and config.

    python examples/sft/train.py --data runs/export --output_dir runs/sft-student          # any SFTConfig flag
    python examples/sft/train.py --config examples/sft/recipe.yaml                         # the same from YAML
    python examples/sft/train.py --config examples/sft/paper.yaml --data D --output_dir O  # the paper's preset
    python examples/sft/train.py --config runs/export/trl_sft.yaml    # from `tessy export --trainer-configs`

What it does, and promises:

- arguments: `trl.TrlParser` over `RecipeArguments` (the export, the student, LoRA, voice, global
  batch) and `RecipeSFTConfig`, which is `trl.SFTConfig` (every one of its flags works, by its own
  name) with two defaults of the recipe's: ``max_length`` unset means "from the data", ``bf16``
  unset means "where the hardware has it" (a CUDA GPU with bf16; on CPU fp32 unless ``--bf16
  true``). ``--config FILE.yaml`` sets any of them; flags on the command line override the file;
- reads an export of any tessy format (`messages` JSONL, Parquet, a `datasets` folder, the
  LLaMA-Factory ShareGPT folder, or the prompt-completion layout) with its ``train`` and, when
  present, ``validation`` split;
- turns every row into TRL's conversational prompt-completion form (the prompt turns, then the
  assistant response), so SFTTrainer renders both with the STUDENT's OWN chat template and
  computes the loss on the assistant turn only (prompt tokens are labelled -100; the response and
  its end-of-turn marker are learned);
- ``max_length`` from the data when not given: the longest row in tokens as TRL tokenizes it
  (train and validation), rounded up to 64, capped by ``--max_length_cap`` (default: the model's
  ``max_position_embeddings``); a row over the cap is cut as TRL cuts (``truncation_mode``) and
  counted in ``rows_cut`` with a warning, so nothing is cut silently;
- ``--global_batch_size N`` sets ``gradient_accumulation_steps`` to N / (per-device batch x
  devices), or says why it cannot;
- loads the student by name, folder, or tessy demo alias (``smollm2-135m-instruct``, resolved
  offline by `tessy.models.resolve_model`), in float32 unless ``--model_init_kwargs`` says
  otherwise (bf16 is mixed precision over float32 weights);
- checkpoints every ``save_steps`` (TRL's default: 500) in ``OUTPUT/checkpoint-N``; a rerun with the
  same ``--output_dir`` resumes from the last one; they are removed once the model is saved unless
  ``--keep_checkpoints``;
- full fine-tune by default, LoRA with ``--lora`` (peft; the adapter is merged before saving), so
  ``OUTPUT`` is always a plain transformers model + tokenizer that any tool loads;
- logs every logging step to ``OUTPUT/log.jsonl`` (appended, so a resumed run continues it) and
  writes ``OUTPUT/metrics.json``: the settings, the length taken, the training loss per logging
  step, and the validation loss before and after training when there is a validation split.

`train(RecipeConfig(...))` is the Python entry that examples/table1.py uses, with the fixed
settings it always had: float32 on CPU, the ``max_length`` it is given, checkpoints in
``OUTPUT/checkpoints`` only with ``save_steps`` (resumed from, then removed), completion-only loss.
`run(RecipeArguments(...), RecipeSFTConfig(...))` is the command's entry.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTConfig, TrlParser

from tessy.export.trainers import fit_length

STUDENT = "smollm2-135m-instruct"


@dataclass
class RecipeArguments:
    """The recipe's own arguments; every other one is `trl.SFTConfig`'s."""

    data: str = field(metadata={"help": "Export folder written by `tessy export` (any format)."})
    model: str = field(default=STUDENT, metadata={"help": "Student: a model folder, hub name, or tessy demo alias."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    voice: str = field(default="", metadata={
        "help": "The student's voice (tessy.voices: a built-in name or a JSON file) put before every prompt, as when "
                "it wrote data and when it is evaluated; the loss stays on the response only."})
    limit: int = field(default=0, metadata={"help": "Use only the first N train rows (0: all)."})
    global_batch_size: int = field(default=0, metadata={
        "help": "Sequences per optimizer step over all devices; sets gradient_accumulation_steps to it / "
                "(per_device_train_batch_size x devices) (0: gradient_accumulation_steps as given)."})
    max_length_cap: int = field(default=0, metadata={
        "help": "Upper bound of the max_length taken from the data (0: the model's max_position_embeddings)."})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep OUTPUT/checkpoint-N after the final model is saved (default: removed)."})


def _aliased(name: str, *aliases: str):
    """SFTConfig's own field `name`, also taken under the recipe's earlier flag names."""
    from dataclasses import fields

    original = next(f for f in fields(SFTConfig) if f.name == name)
    return field(default=original.default, metadata={**original.metadata, "aliases": list(aliases)})


@dataclass
class RecipeSFTConfig(SFTConfig):
    """`trl.SFTConfig` with the recipe's defaults: ``max_length`` None means "from the data" (not
    "no limit"), ``bf16`` None means "where the hardware has it"; ``output_dir`` is required. The
    recipe's earlier flags still work (``--output``, ``--epochs``, ``--batch-size``,
    ``--grad-accum``, ``--warmup``; dashes for underscores work for every flag)."""

    output_dir: str | None = _aliased("output_dir", "--output")
    num_train_epochs: float = _aliased("num_train_epochs", "--epochs")
    per_device_train_batch_size: int = _aliased("per_device_train_batch_size", "--batch-size")
    gradient_accumulation_steps: int = _aliased("gradient_accumulation_steps", "--grad-accum")
    warmup_steps: float = _aliased("warmup_steps", "--warmup")
    max_length: int | None = field(default=None, metadata={
        "help": "Longest training sequence in tokens. Default: from the data (the longest row as TRL tokenizes it, "
                "rounded up to 64, capped by --max_length_cap)."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required: the folder for the fine-tuned model, metrics.json, "
                             "log.jsonl and checkpoints")
        if self.bf16 is None and not self.fp16:
            self.bf16 = bf16_available(self.use_cpu)
        super().__post_init__()


def bf16_available(use_cpu: bool = False) -> bool:
    """bf16 mixed precision where the hardware has it: a CUDA GPU that supports it (never on CPU)."""
    import torch

    return not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class RecipeConfig:
    """The fixed settings examples/table1.py trains with (`train`); the command has `RecipeArguments`."""

    data: str = field(metadata={"help": "Export folder written by `tessy export` (any format)."})
    output: str = field(metadata={"help": "Folder for the fine-tuned model, tokenizer and metrics.json."})
    model: str = STUDENT
    max_steps: int = -1  # optimizer steps (-1: run `epochs`)
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 4  # sequences per device step
    grad_accum: int = 1
    max_length: int = 1024  # longest training sequence in tokens (prompt + response)
    warmup: float = 0.0  # steps (>= 1) or a share of all steps (< 1)
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    logging_steps: int = 10
    device: str = "cpu"  # cpu or cuda
    limit: int = 0  # use only the first N train rows (0: all)
    voice: str = ""  # the student's voice put before every prompt (tessy.voices)
    save_steps: int = 0  # a checkpoint every N steps (0: none); a rerun with the same output goes on from the last
    bf16: bool = False  # bf16 mixed precision over float32 weights (torch autocast; on CPU too, where it has bf16)


# ---------------------------------------------------------------------------- data


def _sharegpt_to_messages(row: dict) -> list[dict]:
    roles = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return messages + [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]


def load_export(folder: str | Path):
    """The export's splits as a DatasetDict with a ``messages`` column, whatever the format (or,
    for a prompt-completion export, its ``prompt`` and ``completion`` strings as they are)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    folder = Path(folder)
    if (folder / "dataset_dict.json").exists():
        data = load_from_disk(str(folder))
    else:
        for suffix, builder in ((".parquet", "parquet"), (".jsonl", "json")):
            files = {p.stem: str(p) for p in sorted(folder.glob(f"*{suffix}")) if p.stem in ("train", "validation")}
            if files:
                data = load_dataset(builder, data_files=files)
                break
        else:
            raise FileNotFoundError(f"{folder} holds no tessy export (train.jsonl, train.parquet or dataset_dict.json)")
    if "train" not in data:
        raise ValueError(f"{folder} has no train split")
    if "conversations" in data["train"].column_names:
        data = DatasetDict({k: v.map(lambda row: {"messages": _sharegpt_to_messages(row)}) for k, v in data.items()})
    return data


def to_prompt_completion(dataset, voice: str = ""):
    """Conversational prompt-completion rows: loss on the assistant turn only (the voice's
    preamble, if any, goes in front of the prompt turns). A prompt-completion export (`tessy export
    --layout prompt-completion`, for templates that drop thinking from history) is taken as it is:
    its prompts are rendered already."""
    from tessy.voices import load_voice, with_voice

    if "messages" not in dataset.column_names:
        if voice:
            raise ValueError("a prompt-completion export holds rendered prompts: a voice cannot be put in front "
                             "of them (export the messages layout, or train without --voice)")
        return dataset.select_columns(["prompt", "completion"])
    preamble = load_voice(voice)

    def convert(row):
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"row {row.get('id')!r} does not end with an assistant turn")
        return {"prompt": with_voice(preamble, messages[:-1]), "completion": messages[-1:]}

    return dataset.map(convert, remove_columns=dataset.column_names)


def _rows(data: str, limit: int):
    rows = load_export(data)
    train_rows, eval_rows = rows["train"], rows.get("validation")
    if limit:
        train_rows = train_rows.select(range(min(limit, len(train_rows))))
    return train_rows, eval_rows


# ---------------------------------------------------------------------------- training


class JsonlLog(TrainerCallback):
    """Every log event (loss, learning rate, evaluation) as one JSON line in `path`, appended."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def _student(model: str, model_init_kwargs: dict | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tessy.models import resolve_model

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ValueError(f"{model} has no chat template; the recipe trains with the student's own template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, **{"dtype": torch.float32, **(model_init_kwargs or {})})
    return model, tokenizer


def _sft_trainer(args, model, tokenizer, train_rows, eval_rows, voice, lora, lora_r, lora_alpha, final: Path):
    from trl import SFTTrainer

    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=to_prompt_completion(train_rows, voice),
                      eval_dataset=(to_prompt_completion(eval_rows, voice)
                                    if eval_rows is not None and len(eval_rows) else None),
                      peft_config=peft_config, callbacks=[JsonlLog(final / "log.jsonl")])


def build_trainer(config: RecipeConfig, train_rows=None, eval_rows=None):
    """An SFTTrainer for `config` (data from `config.data` unless rows are given)."""
    if train_rows is None:
        train_rows, eval_rows = _rows(config.data, config.limit)
    model, tokenizer = _student(config.model)
    args = SFTConfig(
        output_dir=str(Path(config.output) / "checkpoints"), max_steps=config.max_steps,
        num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, max_length=config.max_length,
        warmup_steps=config.warmup, completion_only_loss=True, packing=False, seed=config.seed,
        logging_steps=config.logging_steps, eval_strategy="no", report_to="none",
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        # The last checkpoint only: one holds the weights and the optimizer's state (7 GB for a
        # 0.5B model in fp32), and table1's eight filled the disk before the model was saved.
        save_only_model=False, save_total_limit=1,
        use_cpu=config.device == "cpu", bf16=config.bf16, fp16=False, dataloader_num_workers=0,
        gradient_checkpointing=config.gradient_checkpointing, disable_tqdm=True)
    return _sft_trainer(args, model, tokenizer, train_rows, eval_rows, config.voice, config.lora, config.lora_r,
                        config.lora_alpha, Path(config.output))


def _fit(trainer, resume, metrics: dict[str, Any]) -> None:
    """Validation loss before, training (from `resume`), validation loss after, into `metrics`."""
    if trainer.eval_dataset is not None:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    metrics["resumed"] = bool(resume)
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    metrics["steps"] = result.global_step
    metrics["train_loss"] = result.training_loss
    metrics["log"] = [{k: v for k, v in entry.items() if k in ("step", "loss", "learning_rate", "epoch")}
                      for entry in trainer.state.log_history if "loss" in entry]
    if trainer.eval_dataset is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]


def _save(trainer, output: Path, lora: bool, metrics: dict[str, Any]) -> None:
    model = trainer.model
    if lora:
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.save_pretrained(output)
        trainer.processing_class.save_pretrained(output)
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def train(config: RecipeConfig, train_rows=None, eval_rows=None) -> dict[str, Any]:
    """Train with `config`'s fixed settings (examples/table1.py); returns the metrics."""
    output = Path(config.output)
    trainer = build_trainer(config, train_rows, eval_rows)
    metrics: dict[str, Any] = {"config": asdict(config), "train_rows": len(trainer.train_dataset),
                               "eval_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0}
    checkpoints = output / "checkpoints"
    resume = config.save_steps > 0 and any(checkpoints.glob("checkpoint-*"))
    finished = _finished_checkpoint(checkpoints, config.max_steps) if resume else None
    if finished is not None:
        _take_finished(trainer, finished, metrics)
    else:
        _fit(trainer, True if resume else None, metrics)
    _save(trainer, output, config.lora, metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return metrics


def _finished_checkpoint(checkpoints: Path, max_steps: int) -> Path | None:
    """The last checkpoint if it holds every step already (the run ended, its model was not saved)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if max_steps > 0 and checkpoints.is_dir() else None
    if last is None:
        return None
    state = json.loads((Path(last) / "trainer_state.json").read_text())
    return Path(last) if state["global_step"] >= max_steps else None


def _take_finished(trainer, checkpoint: Path, metrics: dict[str, Any]) -> None:
    """The model of a checkpoint that holds every step, into `trainer`, with its run's figures.
    Resuming from it instead would train one step more (transformers goes on past `max_steps`
    when a run resumes exactly there)."""
    trainer._load_from_checkpoint(str(checkpoint))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    metrics["resumed"] = True
    metrics["train_seconds"] = None  # the run that trained it ended before it could say
    metrics["steps"] = state["global_step"]
    metrics["train_loss"] = sum(e["loss"] for e in logged) / len(logged) if logged else None
    metrics["log"] = [{k: v for k, v in entry.items() if k in ("step", "loss", "learning_rate", "epoch")}
                      for entry in logged]
    if trainer.eval_dataset is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]


def _accumulation(global_batch: int, per_device: int) -> int:
    devices = int(os.environ.get("WORLD_SIZE", "1"))
    if global_batch % (per_device * devices):
        raise ValueError(f"--global_batch_size {global_batch} is not a multiple of per_device_train_batch_size "
                         f"{per_device} x {devices} device(s)")
    return global_batch // (per_device * devices)


def _lengths(dataset) -> list[int]:
    """Tokens per row of a tokenized dataset, read from its Arrow column (no Python lists of ids)."""
    import pyarrow.compute as pc

    if dataset is None:
        return []
    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def _cut(dataset, length: int, mode: str):
    """`dataset` (tokenized) cut to `length` tokens the way TRL cuts, then without rows left with no loss."""
    if dataset is None:
        return None
    part = slice(None, length) if mode == "keep_start" else slice(-length, None)
    dataset = dataset.map(lambda row: {"input_ids": row["input_ids"][part], "labels": row["labels"][part]})
    return dataset.filter(lambda row: any(label != -100 for label in row["labels"]))


def run(recipe: RecipeArguments, args: RecipeSFTConfig, train_rows=None, eval_rows=None) -> dict[str, Any]:
    """Train as the command does; returns the metrics (also in OUTPUT/metrics.json)."""
    output = Path(args.output_dir)
    if train_rows is None:
        train_rows, eval_rows = _rows(recipe.data, recipe.limit)
    if recipe.global_batch_size:
        args.gradient_accumulation_steps = _accumulation(recipe.global_batch_size, args.per_device_train_batch_size)
    given = args.max_length
    if given is None and args.packing:
        raise ValueError("--packing packs rows into blocks of --max_length tokens: give --max_length")
    model, tokenizer = _student(recipe.model, args.model_init_kwargs)
    trainer = _sft_trainer(args, model, tokenizer, train_rows, eval_rows, recipe.voice, recipe.lora, recipe.lora_r,
                           recipe.lora_alpha, output)
    lengths = _lengths(trainer.train_dataset) + _lengths(trainer.eval_dataset)
    longest = max(lengths, default=0)
    if given is None:
        cap = recipe.max_length_cap or getattr(model.config, "max_position_embeddings", None) or 32768
        args.max_length = min(fit_length(longest, margin=0), cap)
        cut = sum(n > args.max_length for n in lengths)
        if cut:
            trainer.train_dataset = _cut(trainer.train_dataset, args.max_length, args.truncation_mode)
            trainer.eval_dataset = _cut(trainer.eval_dataset, args.max_length, args.truncation_mode)
            if not len(trainer.train_dataset):
                raise ValueError(f"--max_length_cap {args.max_length} leaves no response token in any train row "
                                 f"(the longest row has {longest} tokens)")
    else:  # TRL has cut the rows already: the ones at the limit were longer (or exactly as long)
        cut = sum(n >= given for n in lengths)
    if cut:
        print(f"train.py: warning: {cut} of {len(lengths)} rows reach max_length {args.max_length} tokens and are "
              f"cut ({args.truncation_mode}; a row exactly that long is counted too); drop long rows with "
              "`tessy export --max-tokens` instead", file=sys.stderr)
    metrics: dict[str, Any] = {
        "recipe": asdict(recipe), "sft": json.loads(args.to_json_string()),
        "train_rows": len(trainer.train_dataset),
        "eval_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "max_length": args.max_length, "max_length_from": "data" if given is None else "given",
        "longest_row_tokens": longest, "rows_cut": cut, "bf16": bool(args.bf16),
        "gradient_accumulation_steps": args.gradient_accumulation_steps}
    resume = args.resume_from_checkpoint
    if resume is None and output.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(str(output))
    _fit(trainer, resume, metrics)
    _save(trainer, output, recipe.lora, metrics)
    if not recipe.keep_checkpoints and trainer.is_world_process_zero():
        for checkpoint in output.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return metrics


def parse(argv: list[str] | None = None) -> tuple[RecipeArguments, RecipeSFTConfig]:
    """`RecipeArguments` and `RecipeSFTConfig` from the command line and ``--config FILE.yaml``."""
    parser = TrlParser((RecipeArguments, RecipeSFTConfig))
    parser.description = __doc__.split("\n")[0]
    recipe, args = parser.parse_args_and_config(argv)
    return recipe, args


def main(argv: list[str] | None = None) -> int:
    try:
        recipe, args = parse(argv)
    except ValueError as exc:  # a value the configs refuse (argparse reports unknown flags itself)
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    metrics = run(recipe, args)
    before, after = metrics.get("eval_loss_before"), metrics.get("eval_loss_after")
    print(f"trained {metrics['steps']} steps on {metrics['train_rows']} rows in {metrics['train_seconds']} s "
          f"(max_length {metrics['max_length']}, {'bf16' if metrics['bf16'] else 'fp32'}); "
          f"train loss {metrics['train_loss']:.4f}"
          + (f"; validation loss {before:.4f} -> {after:.4f}" if before is not None else "")
          + f"; model in {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
