"""`tessy predictor train`: a 2-class token classifier (capability / style) from annotations.

Owns: turning annotated segments into token labels, the training loop (plain torch, CPU-safe),
resumable checkpoints, the threshold, and the final checkpoint's label semantics.

- Labels come from the annotated character spans through the tokenizer's offsets: a token is
  style when its first non-whitespace character is (`data.range_labels`); whitespace-only and
  special tokens are not trained on. The label at token i describes token i (offset 0).
- Base model: any causal LM or encoder that `AutoModelForTokenClassification` builds (the demo's
  SmolLM2-135M → `LlamaForTokenClassification`; the paper: Qwen3-0.6B-Base); its LM head is
  dropped and a fresh 2-class head added. `num_layers` keeps only the first N layers.
- Class imbalance: cross-entropy weighted by `style_weight` (automatic: inverse frequency,
  capped at 10), then the style-probability threshold with the best F1 on the dev split is
  folded into the head's bias (`bias[style] -= logit(threshold)`), so the plain argmax the
  engine applies uses it.
- Split: by response (`data.split_of`): train / dev / test. Test segments are never seen here;
  `tessy predictor eval` with the same split settings evaluates on them.
- Resume: every `save_every` steps the model, optimizer and scheduler go to
  ``OUTPUT/checkpoint-last`` (`durable.new_folder`: a temporary folder, fsynced, then renamed);
  a rerun of the same command continues from there with the same data order (a seeded
  permutation per epoch). A folder made by another config is refused unless `overwrite`.
- Output: a standard Hugging Face checkpoint in OUTPUT (config, weights, tokenizer) whose config
  says ``id2label = {0: "capability", 1: "style"}``, ``tessy_style_label_id = 1`` and
  ``tessy_label_offset = 0``, so `tessy synthesize --student.predictor OUTPUT` needs no other
  flag; ``tessy_predictor.json`` (written last: it marks the training as finished) records the
  data, split, steps, threshold and dev scores; ``train_log.jsonl`` the loss curve.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tessy import durable
from tessy.predictor_training.config import TrainConfig
from tessy.predictor_training.data import char_mask, parse_roles, range_labels, read_annotations, split_of

log = logging.getLogger(__name__)

STYLE_LABEL_ID = 1
LABEL_OFFSET = 0
ID2LABEL = {0: "capability", 1: "style"}
IGNORE = -100
INFO_FILE = "tessy_predictor.json"
CONFIG_FILE = "train_config.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT = "checkpoint-last"
STATE_FILE = "train_state.pt"


@dataclass
class TrainReport:
    output: str
    steps: int = 0
    resumed_from: int = 0
    already_done: bool = False
    segments: dict[str, int] = field(default_factory=dict)
    style_weight: float = 1.0
    threshold: float = 0.5
    dev: dict = field(default_factory=dict)
    wall_s: float = 0.0


def encode(tokenizer, annotation: dict, max_length: int) -> tuple[list[int], list[int]]:
    """Input ids and labels (1 style, 0 capability, IGNORE untrained) of one annotated segment."""
    text = annotation["text"]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length)
    labels = range_labels(text, char_mask(text, annotation["spans"]), enc["offset_mapping"])
    return list(enc["input_ids"]), [IGNORE if label is None else int(label) for label in labels]


def _fingerprint(config: TrainConfig) -> dict:
    shaping = dataclasses.asdict(config)
    for key in ("output", "overwrite", "progress", "device", "save_every", "log_every"):
        shaping.pop(key)
    return shaping


def _prepare_output(config: TrainConfig) -> Path | None:
    """Create / check the output folder; return None when it already holds this training."""
    out = Path(config.output)
    wanted = _fingerprint(config)
    saved = out / CONFIG_FILE
    if saved.exists() and not config.overwrite:
        if json.loads(saved.read_text()) != wanted:
            raise RuntimeError(f"{out} holds a training with another config; use another --output or --overwrite")
        if (out / INFO_FILE).exists():
            return None
    if config.overwrite and out.exists():
        for name in (INFO_FILE, CONFIG_FILE, LOG_FILE, CHECKPOINT, "config.json", "model.safetensors"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    durable.write_atomic(saved, json.dumps(wanted, indent=2) + "\n")
    return out


def _batches(n_examples: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the examples of optimizer step `step` (a seeded permutation per epoch)."""
    per_epoch = max(1, math.ceil(n_examples / batch_size))
    epoch, position = divmod(step, per_epoch)
    order = list(range(n_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[position * batch_size:(position + 1) * batch_size]


def _collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(examples):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
    return ids, mask, labels


def style_probabilities(model, examples, pad_id: int, device, batch_size: int = 16) -> tuple[list[float], list[int]]:
    """P(style) and the label of every labelled token of `examples`."""
    import torch

    probs: list[float] = []
    gold: list[int] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            ids, mask, labels = _collate(examples[start:start + batch_size], pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            p = torch.softmax(logits, -1)[..., STYLE_LABEL_ID].cpu()
            keep = labels != IGNORE
            probs += p[keep].tolist()
            gold += labels[keep].tolist()
    model.train()
    return probs, gold


def f1_at(probs: list[float], gold: list[int], threshold: float) -> dict:
    tp = sum(1 for p, g in zip(probs, gold) if p >= threshold and g == 1)
    fp = sum(1 for p, g in zip(probs, gold) if p >= threshold and g == 0)
    fn = sum(1 for p, g in zip(probs, gold) if p < threshold and g == 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tokens": len(gold)}


def best_threshold(probs: list[float], gold: list[int]) -> float:
    """The threshold in 0.05..0.95 with the best F1 (ties: the one closest to 0.5)."""
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    return max(grid, key=lambda t: (round(f1_at(probs, gold, t)["f1"], 6), -abs(t - 0.5)))


class _quiet_transformers:
    """Silence transformers' warnings and progress bars for a block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.level)
        hf_logging.enable_progress_bar()


def _head(model):
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if head is not None and hasattr(head, "bias"):
            return head
    return None


def _save_checkpoint(out: Path, model, tokenizer, optimizer, scheduler, step: int) -> None:
    import torch

    with durable.new_folder(out / CHECKPOINT) as staging:
        with _quiet_transformers():
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   staging / STATE_FILE)


def train(config: TrainConfig) -> TrainReport:
    """Train (or resume, or find finished) the predictor described by `config`."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from tessy.models import resolve_model

    started = time.perf_counter()
    if config.batch_size < 1 or config.max_length < 2:
        raise ValueError("batch_size must be >= 1 and max_length >= 2")
    roles = parse_roles(config.roles)
    annotations = read_annotations(config.data, roles)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for annotation in annotations:
        part = split_of(str(annotation.get("source_id")), str(annotation.get("model")), test_fraction=config.test_fraction,
                        dev_fraction=config.dev_fraction, seed=config.split_seed)
        splits[part].append(annotation)
    report = TrainReport(output=config.output, segments={k: len(v) for k, v in splits.items()})
    if not splits["train"]:
        raise ValueError(f"no training segments in {config.data} (roles {', '.join(roles)}; "
                         f"{len(annotations)} annotated, split {report.segments})")
    out = _prepare_output(config)
    if out is None:
        info = json.loads((Path(config.output) / INFO_FILE).read_text())
        report.already_done, report.steps = True, info.get("steps", 0)
        report.threshold, report.dev = info.get("threshold", 0.5), info.get("dev", {})
        return report

    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else "cpu" if config.device == "auto" else config.device)
    base = resolve_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{config.base_model}: a fast tokenizer is needed (character offsets)")
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    train_set = [encode(tokenizer, a, config.max_length) for a in splits["train"]]
    dev_set = [encode(tokenizer, a, config.max_length) for a in splits["dev"]]
    counts = [sum(labels.count(c) for _, labels in train_set) for c in (0, 1)]
    if not counts[1]:
        log.warning("the training segments hold no style token: the predictor will learn to say "
                    "capability everywhere; annotate more or other segments")
    weight = config.style_weight or min(10.0, max(1.0, counts[0] / max(1, counts[1])))
    report.style_weight = weight

    resume = Path(config.output) / CHECKPOINT
    extra = {"num_labels": 2, "id2label": dict(ID2LABEL), "label2id": {v: k for k, v in ID2LABEL.items()}}
    if config.num_layers:
        extra["num_hidden_layers"] = config.num_layers
    if (resume / STATE_FILE).exists():
        with _quiet_transformers():
            model = AutoModelForTokenClassification.from_pretrained(resume, dtype=torch.float32)
        state = torch.load(resume / STATE_FILE, map_location="cpu", weights_only=False)
    else:
        torch.manual_seed(config.seed)
        model_config = AutoConfig.from_pretrained(base, **extra)
        with _quiet_transformers():  # its load report lists the dropped LM head and the new head: expected
            model = AutoModelForTokenClassification.from_pretrained(base, config=model_config, dtype=torch.float32)
        log.info("%s: new 2-class head on %d layers", config.base_model, model.config.num_hidden_layers)
        state = None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_id
    model.to(device).train()

    steps_per_epoch = max(1, math.ceil(len(train_set) / config.batch_size))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup = int(config.warmup_fraction * total)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = report.resumed_from = int(state["step"])
        log.info("resuming %s from step %d", config.output, step)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, weight], device=device), ignore_index=IGNORE)

    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", desc="train", dynamic_ncols=True)
    window: list[float] = []
    with open(out / LOG_FILE, "a", encoding="utf-8") as log_file:
        while step < total:
            batch = [train_set[i] for i in _batches(len(train_set), config.batch_size, config.seed, step)]
            ids, mask, labels = _collate(batch, pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            loss = loss_fn(logits.float().view(-1, 2), labels.to(device).view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(loss.item())
            if bar is not None:
                bar.set_postfix(loss=f"{window[-1]:.4f}", refresh=False)
                bar.update(1)
            if config.log_every and (step % config.log_every == 0 or step == total):
                log_file.write(json.dumps({"step": step, "loss": sum(window) / len(window),
                                           "lr": scheduler.get_last_lr()[0]}) + "\n")
                log_file.flush()
                window = []
            if config.save_every and step % config.save_every == 0 and step < total:
                _save_checkpoint(out, model, tokenizer, optimizer, scheduler, step)
    if bar is not None:
        bar.close()
    report.steps = step

    # The threshold: tuned on dev (train when there is no dev split), folded into the bias.
    probs, gold = style_probabilities(model, dev_set or train_set, pad_id, device)
    threshold = best_threshold(probs, gold) if config.tune_threshold and 1 in gold else 0.5
    head = _head(model)
    if head is None or head.bias is None:
        if threshold != 0.5:
            log.warning("the head has no bias to fold the threshold into; keeping 0.5")
        threshold = 0.5
    else:
        with torch.no_grad():
            head.bias[STYLE_LABEL_ID] -= math.log(threshold / (1 - threshold))
    report.threshold = threshold
    report.dev = {"split": "dev" if dev_set else "train", "at_0.5": f1_at(probs, gold, 0.5),
                  "at_threshold": f1_at(probs, gold, threshold)}

    model.config.id2label = dict(ID2LABEL)
    model.config.label2id = {v: k for k, v in ID2LABEL.items()}
    model.config.tessy_style_label_id = STYLE_LABEL_ID
    model.config.tessy_label_offset = LABEL_OFFSET
    with _quiet_transformers():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report.wall_s = time.perf_counter() - started
    info = {
        "base_model": config.base_model, "num_layers": config.num_layers or None, "data": config.data,
        "roles": list(roles), "segments": report.segments, "label_counts": {"capability": counts[0], "style": counts[1]},
        "style_weight": weight, "steps": step, "threshold": threshold, "dev": report.dev,
        "split": {"test_fraction": config.test_fraction, "dev_fraction": config.dev_fraction,
                  "split_seed": config.split_seed},
        "style_label_id": STYLE_LABEL_ID, "label_offset": LABEL_OFFSET, "train_s": round(report.wall_s, 1),
    }
    durable.write_atomic(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return report
