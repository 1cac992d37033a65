"""What a role's servers computed of each prompt, and whether their prefix cache kept up.

`PromptMeter.count` adds one answered request to the role's `HTTPStats`: the prompt tokens the
server counted, those it computed (not found in its prefix cache; `parse.prompt_usage`), and, for
each later request of a sample, how many it computed beyond the tokens that were new since that
sample's last request. What the server already holds is that request's context and the ids it
answered; the engine only appends to a sample's context or cuts its open span back, so the new
tokens are the context past the longest prefix it shares with those.

A server whose cache keeps each sample's last answer computes only the new tokens again (llama.cpp
re-reads one token for its logits; vLLM caches whole blocks of 16, so up to 15 more). llama.cpp
serving a sliding-window model (Gemma 3, gpt-oss) cannot cut such a cache back and recomputes the
last answer and more on every request unless started with `--swa-full`: `recompute_warning` says
so when the excess is larger than a cache block. `never_hits` tells the backend to stop reading
prompts ahead (`warm`) on a server whose answers show it keeps no prefix at all.

A stream stopped at the cut ends before vLLM's last event, the only one that carries
`prompt_tokens_details` (its usage on every event has no cache figure): such a request's cache use
is unknown. It is counted in `prompt_unknown` (its prompt as computed, an upper bound), never as
"no cache hits"; `usage_note` says so for the run summary. `prompt_computed` gives a role's figure
for the summary: the servers' own count where they keep one (`metrics`), else these.
"""

from __future__ import annotations

from typing import Any

from tessy.backends.openai import parse

#: Mean prompt tokens computed per later request beyond the new ones that `recompute_warning`
#: tolerates: one vLLM cache block (cached_tokens counts whole blocks).
TOLERATED_EXCESS = 16
#: Later requests needed before `recompute_warning` judges.
MIN_FOLLOW_UPS = 8


class PromptMeter:
    """Per role: each live sample's last request (context length, ids answered) and the counters."""

    def __init__(self, stats: Any):
        self.stats = stats
        self._held: dict[str, tuple[int, list[int]]] = {}  # seq_id -> (context length, ids answered)
        self.hits = 0  # answers that found part of their prompt in the server's cache

    def count(self, seq_id: str, answer: dict, context: list[int], answered: list[int], whole: bool = True) -> None:
        """Count one answered request of `seq_id` (`answer`: the JSON answer or a stream's last
        event with usage; `whole` false: a stream stopped before its end)."""
        stats = self.stats
        total, processed = parse.prompt_usage(answer)
        total = len(context) if total is None else total
        stats.prompt_tokens += total
        if processed is None:  # the server does not say: every prompt token counts as processed
            stats.prompt_processed += total
            stats.prompt_unknown += not whole
        else:
            processed = min(total, processed)
            stats.prompt_reported += 1
            self.hits += processed < total
            stats.prompt_processed += processed
            held = self._held.get(seq_id)
            if held is not None:
                stats.follow_ups += 1
                stats.follow_up_excess += max(0, processed - new_tokens(context, *held))
        if seq_id:
            self._held[seq_id] = (len(context), list(answered))

    @property
    def never_hits(self) -> bool:
        """Whether enough of a sample's later requests were answered to say the server has no
        prefix cache (or it is off): they all computed their whole prompt."""
        return self.stats.follow_ups >= MIN_FOLLOW_UPS and self.hits == 0

    def release(self, seq_id: str) -> None:
        self._held.pop(seq_id, None)


def new_tokens(context: list[int], held_context: int, held_answer: list[int]) -> int:
    """Tokens of `context` a server holding the last request's context and answer must compute
    (at least one: the logits of the last token are needed)."""
    if len(context) <= held_context:  # cut back into what it holds
        return 1
    shared = held_context
    for mine, held in zip(context[held_context:], held_answer):
        if mine != held:
            break
        shared += 1
    return max(1, len(context) - shared)


def recompute_warning(role: str, counters: dict[str, int]) -> str:
    """A line for the run summary when `role`'s servers recompute far more of each later request
    than is new ('' when they do not, or have not said enough)."""
    follow_ups = counters.get("follow_ups", 0)
    if follow_ups < MIN_FOLLOW_UPS:
        return ""
    excess = counters.get("follow_up_excess", 0) / follow_ups
    if excess <= TOLERATED_EXCESS:
        return ""
    return (f"{role} servers computed {excess:.0f} prompt tokens per later request of a sample beyond the new "
            "ones: their prefix cache does not keep each sample's last answer. llama.cpp serving a "
            "sliding-window model (Gemma 3, gpt-oss): start llama-server with --swa-full; vLLM and SGLang: "
            "check that prefix caching is on (with it on, they still recompute more of a sliding-window "
            "model, and vLLM caches whole blocks only: --block-size)")


def server_cache_warning(role: str, counters: dict[str, int]) -> str:
    """A line for the run summary when `role`'s servers' own counters (`metrics`) say their prefix
    cache found nothing in `MIN_FOLLOW_UPS` requests or more ('' otherwise): every later request
    of a sample then computes its whole context again."""
    if not counters.get("server_counted") or counters.get("server_prompt_cached", 0) > 0 \
            or counters.get("completions", 0) < MIN_FOLLOW_UPS or not counters.get("server_prompt_tokens"):
        return ""
    return (f"{role} servers found none of {counters['server_prompt_tokens']} prompt tokens in their prefix cache "
            f"over {counters['completions']} requests (their own /metrics): start vLLM with "
            "--enable-prefix-caching, SGLang without --disable-radix-cache; vLLM caches whole blocks only "
            "(--block-size; 128 tokens by default on CPU), so contexts shorter than a block never hit")


def usage_note(counters: dict[str, int]) -> str:
    """What the summary says of a role's prompt-cache figures: '' when every answer said how much
    of its prompt was cached, else which answers did not, and why."""
    completions = counters.get("completions", 0)
    reported, unknown = counters.get("prompt_reported", 0), counters.get("prompt_unknown", 0)
    silent = completions - reported - unknown  # whole answers that did not say
    parts = []
    if unknown:
        parts.append(f"cache use unknown for {unknown}/{completions} requests: streams stopped at the cut, "
                     "before the server's usage event; counted as computed")
    if silent > 0 and not reported:
        parts.append("the server does not report cached tokens (vLLM: --enable-prompt-tokens-details)"
                     + ("" if unknown else ": all counted as computed"))
    elif silent > 0:
        parts.append(f"cache reported in {reported}/{completions} answers")
    return "; ".join(parts)


def prompt_computed(counters: dict[str, int], shared: bool = False) -> tuple[int, str]:
    """(prompt tokens a role's servers computed, and what the summary says of the figure): their own
    count (`metrics`) where they keep one, else what the answers said (`usage_note`). `shared`: one
    server serves both roles, so the role that read it holds the figure of both."""
    if counters.get("server_counted"):
        computed = counters["server_prompt_tokens"] - counters["server_prompt_cached"]
        return computed, "its servers' own count" + (", both roles" if shared else "")
    if counters.get("server_shared"):
        return 0, "in the other role's: one server"
    return counters.get("prompt_processed", counters.get("prompt_tokens", 0)), usage_note(counters)
