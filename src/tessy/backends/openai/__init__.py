"""The OpenAI-compatible HTTP backend (vLLM, SGLang, llama.cpp behind `/v1/completions`).

- `backend.py`: `OpenAIHTTPBackend`, the `base.Backend` over HTTP (request bodies, llama.cpp slots);
- `client.py`: the one HTTP client (aiohttp): connections, timeouts, one family of transport faults;
- `exchange.py`: the one request path, streamed or not: sent, judged and retried in one loop, the
  bound on requests in flight;
- `stream.py`: reading one streamed answer (`stream: true`), stopped at the engine's cut;
- `stats.py`: `HTTPStats`, the live counters;
- `probe.py`: readiness at start (served model, transport) and the breaker's probe;
- `retry.py`: which faults are retried, backoff with jitter, Retry-After, the retry budgets;
- `parse.py`: ids, text and finish reason from an answer; context-length and error bodies;
- `cache.py`: prompt tokens the servers computed, and whether their prefix cache kept up;
- `metrics.py`: the same from the servers' own counters (`/metrics`), streamed requests included;
- `tokenizer.py`: the model's tokenizer, loaded locally, or a clear error;
- `replicas.py`: pinning of sequences to replicas, and the circuit breaker that turns a dead
  server into a bounded wait.

Importing this package imports neither aiohttp nor transformers (they load when used).
"""

from tessy.backends.base import ServersUnavailable
from tessy.backends.openai.backend import PROMPT_MODES, OpenAIHTTPBackend
from tessy.backends.openai.tokenizer import TokenizerNotFound, load_http_tokenizer
from tessy.backends.openai.probe import ServerNotReady
from tessy.backends.openai.retry import ServerError
from tessy.backends.openai.stats import HTTPStats

__all__ = ["PROMPT_MODES", "HTTPStats", "OpenAIHTTPBackend", "ServerError", "ServerNotReady", "ServersUnavailable",
           "TokenizerNotFound", "load_http_tokenizer"]
