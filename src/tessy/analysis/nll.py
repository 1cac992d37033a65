"""The student's own negative log-likelihood of responses: how on-policy a data set is.

For each record the response (the assistant content, thinking included) is scored by the
student model after the prompt rendered in the student's chat format, exactly the tokens SFT
would train on: `nll = -mean log p(token | prompt, earlier response tokens)` over the response
tokens (the end-of-turn token is not counted). Lower means the student would have written it
more readily. Runs in process with transformers, fp32, on `device` ("auto": cuda when torch sees
a GPU, else cpu; CPU is fine for the demo models).

Promises: records are consumed as a stream, `chunk` at a time (encoded, sorted by length, scored,
then dropped), so memory does not grow with the number of records; within a chunk rows are
left-padded and batched by length (at most `batch_size` rows and `max_batch_tokens` tokens of input
per forward), with explicit position ids, so padding never changes a score; logits are computed
only for the response positions, and no log-softmax of the whole window is kept; a response
longer than `max_response_tokens` is scored on its first `max_response_tokens` tokens (reported).
`score(records, progress=bar)` advances a tqdm-like `bar` by the responses of each forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass
class Scored:
    nll_sum: float
    tokens: int
    truncated: bool

    @property
    def mean(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; any other name is returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class StudentScorer:
    """Loads the student once; `score(records)` returns one `Scored` per record, in order."""

    def __init__(self, model: str, chat_format: str = "auto", device: str = "cpu", batch_size: int = 8,
                 max_batch_tokens: int = 8192, max_response_tokens: int = 1024, chunk: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tessy.formats import get_format
        from tessy.models import resolve_model

        path = resolve_model(model)
        self.torch = torch
        self.device = resolve_device(device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: torch sees no CUDA device (use cpu, or auto)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self.chunk = chunk or max(256, 32 * batch_size)
        self.format = get_format(chat_format, self.tokenizer)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_response_tokens = max_response_tokens
        config = self.model.config
        self.max_context = int(getattr(config, "max_position_embeddings", 0) or 8192)

    def encode(self, record: dict[str, Any]) -> tuple[list[int], list[int], bool]:
        """(prompt ids, response ids, truncated) of one record in the student's format."""
        messages = record["messages"][:-1]
        content = record["messages"][-1]["content"]
        opener = self.format.thinking_opener
        prompt_text = self.format.prompt_text(self.tokenizer, messages)
        if opener and content.startswith(opener) and prompt_text.endswith(opener):
            content = content[len(opener):]  # the prompt already opens the thinking section
        prompt = self.format.prompt_ids(self.tokenizer, messages)
        response = self.tokenizer.encode(content, add_special_tokens=False)
        room = max(self.max_context - len(prompt), 0)
        limit = min(self.max_response_tokens, room)
        return prompt, response[:limit], len(response) > limit

    def score(self, records: Iterable[dict[str, Any]], progress: Any = None) -> list[Scored]:
        results: list[Scored] = []
        pending: list[tuple[list[int], list[int], bool]] = []
        for record in records:
            pending.append(self.encode(record))
            if len(pending) >= self.chunk:
                results.extend(self._score_encoded(pending, progress))
                pending = []
        if pending:
            results.extend(self._score_encoded(pending, progress))
        return results

    def _score_encoded(self, encoded: list[tuple[list[int], list[int], bool]], progress: Any) -> list[Scored]:
        results: list[Scored | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
        batch: list[int] = []
        for index in order + [None]:
            if index is not None:
                length = len(encoded[index][0]) + len(encoded[index][1])
                longest = max([length] + [len(encoded[i][0]) + len(encoded[i][1]) for i in batch])
                if not batch or (len(batch) < self.batch_size and longest * (len(batch) + 1) <= self.max_batch_tokens):
                    batch.append(index)
                    continue
            if batch:
                for i, scored in zip(batch, self._score_batch([encoded[i] for i in batch])):
                    results[i] = scored
                if progress is not None:
                    progress.update(len(batch))
            batch = [index] if index is not None else []
        return [r for r in results if r is not None]

    def _score_batch(self, rows: list[tuple[list[int], list[int], bool]]) -> list[Scored]:
        torch = self.torch
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        lengths = [len(p) + len(r) for p, r, _ in rows]
        width = max(lengths)
        keep = max(len(r) for _, r, _ in rows) + 1
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (prompt, response, _) in enumerate(rows):
            sequence = prompt + response
            ids[row, width - len(sequence):] = torch.tensor(sequence)
            mask[row, width - len(sequence):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            output = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), logits_to_keep=keep)
            logits = output.logits[:, -keep:, :]
            out = []
            for row, (_, response, truncated) in enumerate(rows):
                r = len(response)
                if r == 0:
                    out.append(Scored(0.0, 0, truncated))
                    continue
                # Window index j holds the logits at absolute position width - keep + j; token at
                # position t is predicted at t - 1, and the response fills the last r positions.
                predicted = logits[row, keep - r - 1: keep - 1, :].float()
                targets = torch.tensor(response, device=predicted.device)
                nll = torch.nn.functional.cross_entropy(predicted, targets, reduction="sum").item()
                out.append(Scored(nll, r, truncated))
        return out
