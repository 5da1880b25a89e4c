# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned first so pip takes the local CPU build instead of a multi-GB CUDA one.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
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
