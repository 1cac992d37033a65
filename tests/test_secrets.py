"""tessy.secrets: every way a credential can be passed is redacted, and nothing else is."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tessy.secrets import (REDACTED, header_secrets, is_secret_field, is_secret_header, redact_config,
                           redact_headers, redact_text, redact_url)


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization", "X-API-Key", "api-key",
                                  "Api-Key", "x-goog-api-key", "X-Auth-Token", "token", "X-Access-Token",
                                  "X-Client-Secret", "Cookie", "Set-Cookie", "X-Session-Id", "X-Amz-Signature",
                                  "X-Password"])
def test_credential_headers_are_secret(name):
    assert is_secret_header(name)


@pytest.mark.parametrize("name", ["Content-Type", "Accept", "X-Team", "User-Agent", "X-Request-Id"])
def test_other_headers_are_not(name):
    assert not is_secret_header(name)


@pytest.mark.parametrize("name,secret", [
    ("api_key", True), ("apikey", True), ("password", True), ("openai_api_key", True), ("hf_token", True),
    ("client_secret", True), ("token", True), ("api_key_env", False), ("max_tokens", False),
    ("max_answer_tokens", False), ("tokenizer", False), ("model", False), ("url", False), ("key", False),
])
def test_config_fields(name, secret):
    assert is_secret_field(name) is secret


def test_redact_headers_keeps_names_and_harmless_values():
    headers = {"Authorization": "Bearer sk-1", "X-API-Key": "k-2", "X-Team": "tessy", "Cookie": ""}
    assert redact_headers(headers) == {"Authorization": REDACTED, "X-API-Key": REDACTED, "X-Team": "tessy",
                                       "Cookie": ""}
    assert headers["Authorization"] == "Bearer sk-1"  # a copy


@pytest.mark.parametrize("url,expected", [
    ("http://user:pass@host:8000/v1", "http://***@host:8000/v1"),
    ("https://tok@gpu1.example.com", "https://***@gpu1.example.com"),
    ("http://host:8000", "http://host:8000"),
    ("http://host:8000/v1?api_key=sk-9&x=1", "http://host:8000/v1?api_key=***&x=1"),
    ("http://u:p%40ss@host/?token=abc", "http://***@host/?token=***"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@dataclasses.dataclass
class Role:
    url: str = ""
    api_key: str = ""
    api_key_env: str = ""
    headers: dict = dataclasses.field(default_factory=dict)
    extra_body: dict = dataclasses.field(default_factory=dict)
    max_tokens: int = 20
    tokenizer: str = "Qwen/Qwen3-8B"


def test_redact_config_is_a_deep_copy_without_any_secret():
    config = {"output": "runs/x", "teacher": dataclasses.asdict(Role(
        url="http://alice:pw-1@gpu1:8000,http://gpu2:8000", api_key="sk-2", api_key_env="VLLM_KEY",
        headers={"X-API-Key": "xk-3", "X-Team": "t"}, extra_body={"min_p": 0.05, "nested": {"api_key": "sk-4"}})),
        "student": Role(api_key="")}
    redacted = redact_config(config)
    text = json.dumps(redacted)
    for secret in ("pw-1", "alice", "sk-2", "xk-3", "sk-4"):
        assert secret not in text
    teacher = redacted["teacher"]
    assert teacher["url"] == "http://***@gpu1:8000,http://gpu2:8000"
    assert teacher["api_key"] == REDACTED and teacher["api_key_env"] == "VLLM_KEY"
    assert teacher["headers"] == {"X-API-Key": REDACTED, "X-Team": "t"}
    assert teacher["extra_body"] == {"min_p": 0.05, "nested": {"api_key": REDACTED}}
    assert teacher["max_tokens"] == 20 and teacher["tokenizer"] == "Qwen/Qwen3-8B"
    assert redacted["student"]["api_key"] == ""  # none given: says so
    assert config["teacher"]["api_key"] == "sk-2"  # the original is untouched


def test_redact_text_known_values_and_shapes():
    message = ("POST http://bob:hunter22@host/v1 failed: Authorization: Bearer sk-abc123 rejected; "
               "body {\"api_key\": \"sk-zzz\", \"max_tokens\": 5}; X-Token=t0k3n; tokenizer: Qwen")
    out = redact_text(message, secrets=["sk-abc123"])
    for secret in ("hunter22", "bob", "sk-abc123", "sk-zzz", "t0k3n"):
        assert secret not in out, out
    assert "http://***@host/v1" in out and "\"max_tokens\": 5" in out and "tokenizer: Qwen" in out


def test_header_secrets_lists_values_and_bare_tokens():
    assert set(header_secrets({"Authorization": "Bearer sk-1", "X-Team": "t", "api-key": "k2"})) == \
        {"Bearer sk-1", "sk-1", "k2"}
