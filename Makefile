# Pooling Lab — the two commands of the README:
#   make run    set everything up and start the app on the embedded model and data/sample/
#   make test   set up what the tests need and run them
#   (make lint  the linter, as CI runs it before the tests)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
INDEX  ?= indexes/sample
SAMPLE := data/sample
STAMP  := $(VENV)/.installed
# Nothing is fetched from a model hub at run time unless the user names a hub model.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

PORT   ?= 8501
# Loopback only by default. HOST=0.0.0.0 exposes the app to every machine that can reach this one:
# it has no login, so do that only on a network you trust.
HOST   ?= 127.0.0.1
# Extra arguments for the app, e.g. APP_ARGS=--allow-build to let visitors build indexes from uploads.
APP_ARGS ?=

.PHONY: run demo test lint fuzz install index clean constraints

# The Streamlit app on the sample index: open http://localhost:$(PORT)
run: $(INDEX)/CURRENT
	$(PY) -m indexer app --index $(INDEX) --host $(HOST) --port $(PORT) $(APP_ARGS)

# The same in a terminal: both rankings for sample queries, then your own
demo: $(INDEX)/CURRENT
	$(PY) -m indexer demo --index $(INDEX) --source $(SAMPLE)

test: $(STAMP)
	$(PY) -m pytest -q

# ruff (pinned in requirements-dev.txt; its rules in pyproject.toml). .ci/run runs it before the tests.
lint: $(STAMP)
	$(PY) -m ruff check indexer tests

# The fuzz tests at length (make test runs a few examples of each): FUZZ_EXAMPLES inputs per test;
# each fuzz module prints its count of inputs tried and crashes at the end.
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	POOLING_LAB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz_*.py

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is pinned exactly: pip takes the local CPU wheel instead of pulling CUDA packages.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

index: $(INDEX)/CURRENT

$(INDEX)/CURRENT: $(STAMP)
	$(PY) -m indexer build $(SAMPLE) --index $(INDEX) --overwrite

constraints: $(STAMP)
	( echo "# Every package the runtime and test environments resolve to, pinned (pip install -c constraints.txt)."; \
	  echo "# Regenerate after changing requirements*.txt: make constraints"; \
	  $(PY) -m pip freeze | sed 's/^torch==2.13.0+cpu/torch==2.13.0/' ) > constraints.txt

clean:
	rm -rf $(VENV) indexes .pytest_cache
