"""Redact credentials before anything is written or printed.

Owns the one rule for what counts as a secret. Promises:

- `is_secret_header(name)`: true for any header whose name suggests a credential: Authorization,
  Proxy-Authorization, X-API-Key, api-key, anything with auth, key, token, secret, password,
  credential, session, signature or cookie in its name;
- `redact_url(url)`: userinfo replaced (`http://user:pass@host` -> `http://***@host`) and the
  values of credential-like query parameters (`?api_key=…`, `?token=…`) replaced by `***`;
- `redact_config(obj)`: a redacted deep copy of a config (dicts, lists, dataclasses): string values
  of secret-named fields (`api_key`, `password`, `*_token`, `*_secret`, `*_key`…) become
  `"<redacted>"` (empty ones stay empty, so a reader sees whether one was given), every mapping
  under a `headers` key has its secret-named headers redacted, every URL its userinfo; the name of
  an environment variable (`api_key_env`) is not a secret and is kept;
- `redact_text(text, secrets=())`: free text (an error message, a log line) with the given secret
  values, URL userinfo, `Bearer`/`Basic` credentials and `key=value` / `"key": "value"` pairs of
  secret-named keys replaced. Pass the values you know (API key, secret header values): patterns
  alone cannot recognise a bare key.

Nothing here is clever on purpose: redacting too much (a header named `X-Keyboard`) costs
nothing, leaking once costs a rotated key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|passw|credential|session|signature|cookie", re.IGNORECASE)
# Config fields: stricter than headers, since `max_tokens` and `tokenizer` are no secrets.
_SECRET_FIELD = re.compile(
    r"^(?:api_?key|apikey|password|passwd|secret|token|auth|authorization|cookie|credentials?)$|"
    r"(?:_key|_secret|_password|_token|_credentials?)$", re.IGNORECASE)
_KEEP_FIELD = re.compile(r"_env$", re.IGNORECASE)  # names an environment variable, not its value
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@?#]+@")
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_KEY_WORDS = r"(?:[A-Za-z0-9_-]*(?:api[_-]?key|apikey|token|secret|password|passwd|authorization|cookie))"
_PAIR = re.compile(  # key=value, key: value, "key": "value"
    r"(?P<key>[\"']?" + _KEY_WORDS + r"[\"']?\s*[:=]\s*)(?P<quote>[\"']?)(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE)


def is_secret_header(name: str) -> bool:
    """Whether a header with this name may carry a credential."""
    return bool(_SECRET_HEADER.search(str(name)))


def is_secret_field(name: str) -> bool:
    """Whether a config field with this name holds a credential (not `max_tokens`, not `*_env`)."""
    name = str(name)
    return bool(_SECRET_FIELD.search(name)) and not _KEEP_FIELD.search(name)


def redact_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A copy with the value of every secret-named header replaced."""
    return {k: (REDACTED if is_secret_header(k) and v not in ("", None) else v) for k, v in (headers or {}).items()}


def redact_url(url: str) -> str:
    """`url` without userinfo and without credential-like query values."""
    url = _USERINFO.sub(lambda m: m.group("scheme") + "***@", str(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_header(k) for k, _ in pairs):
        return url
    query = urlencode([(k, "***" if is_secret_header(k) else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(query=query))


def redact_config(obj: Any, _key: str = "") -> Any:
    """A redacted deep copy of a config: dicts, lists, tuples and dataclasses are walked."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        if _key.lower().endswith("headers"):
            return {k: (REDACTED if is_secret_header(k) and v not in ("", None) else redact_config(v, str(k)))
                    for k, v in obj.items()}
        return {k: redact_config(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_config(v, _key) for v in obj)
    if isinstance(obj, str):
        if obj and is_secret_field(_key):
            return REDACTED
        if "://" in obj:
            return redact_url(obj) if "," not in obj else ",".join(redact_url(u) for u in obj.split(","))
        return obj
    return obj


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text with known secret values and credential-shaped substrings replaced."""
    text = str(text)
    for secret in sorted({s for s in secrets if s and len(str(s)) >= 4}, key=len, reverse=True):
        text = text.replace(str(secret), REDACTED)
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _PAIR.sub(lambda m: m.group("key") + m.group("quote") + REDACTED, text)


def header_secrets(headers: dict[str, Any] | None) -> list[str]:
    """The values of secret-named headers (to pass to `redact_text`), with the bare token of
    `Bearer …` / `Basic …` values too."""
    values = []
    for name, value in (headers or {}).items():
        if is_secret_header(name) and value:
            values.append(str(value))
            scheme, _, token = str(value).partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                values.append(token)
    return values
