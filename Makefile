# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use;
# `make test` also creates .venv-verl (verl pins its own transformers, so its integration
# tests run in an environment of their own).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
# torch is pinned first so pip takes the local CPU build instead of a multi-GB CUDA one.
TORCH ?= torch==2.13.0
# llama-cpp-python compiles llama.cpp here, once, into .whl/ (both environments install
# that wheel; pip prefers it to the sdist of the same version). Tuned to the host CPU
# (-march=native) it crashed (SIGSEGV in batched prompt evaluation) on machines that
# report AMX but run in a VM without it; a build for AVX2 (any x86-64 CPU since 2013) ran
# as fast as AVX-512 there. LLAMA_CMAKE_ARGS= builds for the host CPU instead.
LLAMA ?= llama-cpp-python==0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
# Every other package comes from a lock, pinned with its sha256 hashes: requirements/main.lock
# for .venv, requirements/verl.lock for .venv-verl (CPython 3.11 on Linux x86-64, as here and
# in CI). Each is installed with --no-deps --require-hashes, so nothing is resolved at setup
# time; then torch, the llama wheel and rememr1 (editable, built with the locked setuptools)
# go in without dependencies, and `pip check` proves the result consistent. `make lock`
# rewrites the locks.
MAIN_LOCK := requirements/main.lock
VERL_LOCK := requirements/verl.lock
PIP_VERSION ?= 26.3

.PHONY: setup setup-verl lock demo test test-fast test-verl bench builtin-adapter clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(MAIN_LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q "pip==$(PIP_VERSION)"
	$(PIP) install -q --no-deps --require-hashes -r $(MAIN_LOCK)
	$(PIP) install -q --no-deps "$(TORCH)"
	test -n "$$(ls .whl/llama_cpp_python-*.whl 2>/dev/null)" || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w .whl "$(LLAMA)"
	$(PIP) install -q --no-deps --find-links .whl "$(LLAMA)"
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $@

setup-verl: $(VERL_VENV)/.installed

$(VERL_VENV)/.installed: pyproject.toml $(VERL_LOCK) $(VENV)/.installed
	test -x $(VERL_PY) || python3 -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(VERL_PY) -m pip install -q --no-deps --require-hashes -r $(VERL_LOCK)
	$(VERL_PY) -m pip install -q --no-deps "$(TORCH)"
	$(VERL_PY) -m pip install -q --no-deps --find-links .whl "$(LLAMA)"
	$(VERL_PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(VERL_PY) -m pip check
	touch $@

# Rewrite both locks with pip-tools (in a venv of its own, $(LOCK_VENV)), from pyproject.toml's
# extras ([all,test] and [verl,test]), its build requirements, and the pins above: TORCH and
# LLAMA (the CPU torch on this machine's disk is what the lock resolves against, so no nvidia-*
# CUDA package enters; the check at the end fails if one does) and pip. torch, llama-cpp-python
# and rememr1 itself have no PyPI hash to lock; they stay as comments at the end of each lock
# (pip-compile's note there suggesting --allow-unsafe does not apply). Each existing pin that
# still fits is kept, so after a change to pyproject.toml only what it asks for moves (under a
# minute); `make lock UPGRADE=1` takes the newest release of everything.
LOCK_VENV ?= .venv-lock
PIP_TOOLS ?= pip-tools==7.7.0
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
  --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --find-links .whl \
  --build-deps-for editable --unsafe-package torch --unsafe-package llama-cpp-python \
  --unsafe-package rememr1 -c $(LOCK_VENV)/makefile-pins.txt $(if $(UPGRADE),--upgrade)
lock:
	test -x $(LOCK_VENV)/bin/python || python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q "pip==$(PIP_VERSION)" "$(PIP_TOOLS)"
	mkdir -p requirements
	printf '%s\n' "$(TORCH)" "$(LLAMA)" "pip==$(PIP_VERSION)" > $(LOCK_VENV)/makefile-pins.txt
	$(PIP_COMPILE) --extra all --extra test -o $(MAIN_LOCK) pyproject.toml
	$(PIP_COMPILE) --extra verl --extra test -o $(VERL_LOCK) pyproject.toml
	! grep -n '^nvidia-' $(MAIN_LOCK) $(VERL_LOCK)

# Answer a question about the bundled report with the built-in SmolLM2-135M-Instruct (CPU)
# and its packaged warm-start adapter: each step's memory and recall, then the answer.
demo: setup
	$(VENV)/bin/rememr1 ask examples/harbor_report.txt --chunk-size 256 --max-new-tokens 192 --verbose \
	  -q "Which company built the ship that carried the lens to the Varrow Point lighthouse?"

# The built-in model's packaged LoRA adapter, from scratch (about 60 to 90 minutes on 2 cores):
# oracle traces of RevHop items (seed 0), then supervised LoRA training, then packing the
# last checkpoint (float16) into src/rememr1/adapters/ (the model card there is kept).
ADAPTER_RUN ?= runs/builtin-adapter
builtin-adapter: setup
	$(VENV)/bin/rememr1 data revhop --out $(ADAPTER_RUN)/data --lengths 2k --hops 2,3 --order reverse,forward \
	  -n 60 --seed 0 --tokenizer smollm2 --format json --traces --chunk-size 512
	$(VENV)/bin/rememr1 sft --traces '$(ADAPTER_RUN)/data/traces_*.jsonl' --out $(ADAPTER_RUN)/sft --seed 0 \
	  --max-steps 60 --batch-size 16 --lr 4e-4 --warmup-steps 5 --max-tokens-per-micro-batch 2048 --save-every 10
	$(PY) -c "from rememr1.backends.adapters import pack_adapter; print(pack_adapter('$(ADAPTER_RUN)/sft/checkpoint-60'))"

# Everything: the suite (real-model tests included), then the verl integration tests.
test: setup setup-verl
	$(PY) -m pytest
	$(MAKE) test-verl

test-verl: setup-verl
	$(VERL_PY) -m pytest tests/integrations -p no:cacheprovider

# Without the real-model tests (seconds).
test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) $(VERL_VENV) $(LOCK_VENV) .whl .pytest_cache .hypothesis
