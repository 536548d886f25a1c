# Two commands for a fresh machine: `make run` (the demo) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-quick soak clean image

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "tallykey needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,granian,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/tallykey demo

# In parallel (pytest-xdist, one file per worker), then the tests that stop services or
# hold timing bounds on their own.
test: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile -m "not serial"
	$(BIN)/pytest -m serial

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Side by side in one run (about 8 minutes; bench-quick about 3): see bench/run.py.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get install -y wrk || { echo "install wrk"; exit 1; }; }
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	@command -v wrk >/dev/null || { apt-get install -y wrk || { echo "install wrk"; exit 1; }; }
	$(BIN)/python bench/run.py --quick

# A bounded load run (60 s at 500 req/s on 127.0.0.1, stops by itself): errors and memory.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

# The container image tallykey:<version> and tallykey:latest (docs/deployment.md,
# "Containers"): wheels made here, installed offline in the build; BASE=... to choose the base.
image:
	deploy/container/build.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
