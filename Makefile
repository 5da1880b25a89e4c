# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned first so pip takes the local CPU build instead of a multi-GB CUDA one.
TORCH ?= torch==2.13.0
# llama-cpp-python compiles llama.cpp here. Tuned to the host CPU (-march=native) it
# crashed (SIGSEGV in batched prompt evaluation) on machines that report AMX but run in a
# VM without it; a build for AVX2 (any x86-64 CPU since 2013) ran as fast as AVX-512 there.
# Set LLAMA_CMAKE_ARGS= to build for the host CPU instead.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir "llama-cpp-python>=0.3"
	$(PIP) install -q -e ".[all,test]"
	touch $@

# Answer a question about the bundled report with the built-in SmolLM2-135M-Instruct (CPU).
# The 135M model rarely writes a well-formed <update>, so the demo keeps its whole reply
# as memory (--fallback reply, the official code's behaviour) to show memory being carried.
demo: setup
	$(VENV)/bin/rememr1 ask examples/harbor_report.txt --chunk-size 256 --max-new-tokens 256 --verbose --fallback reply \
	  -q "Which company built the ship that carried the lens to the Varrow Point lighthouse?"

test: setup
	$(PY) -m pytest

# Without the real-model tests (seconds).
test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
