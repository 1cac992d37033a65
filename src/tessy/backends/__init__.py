"""Backends: who generates tokens. `base.Backend` is the interface; `hf` runs transformers in
process, `fake` is a scripted backend for fault injection and fast unit tests."""
