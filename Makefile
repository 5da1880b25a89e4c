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

.PHONY: setup setup-verl demo test test-fast test-verl bench builtin-adapter clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	test -n "$$(ls .whl/llama_cpp_python-*.whl 2>/dev/null)" || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w .whl "$(LLAMA)"
	$(PIP) install -q --find-links .whl "$(LLAMA)"
	$(PIP) install -q --find-links .whl -e ".[all,test]"
	touch $@

setup-verl: $(VERL_VENV)/.installed

$(VERL_VENV)/.installed: pyproject.toml $(VENV)/.installed
	test -x $(VERL_PY) || python3 -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q --upgrade pip
	$(VERL_PY) -m pip install -q "$(TORCH)"
	$(VERL_PY) -m pip install -q --find-links .whl "$(LLAMA)"
	$(VERL_PY) -m pip install -q --find-links .whl -e ".[verl,test]"
	touch $@

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
	rm -rf $(VENV) $(VERL_VENV) .whl .pytest_cache .hypothesis
