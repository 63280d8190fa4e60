# Two commands a fresh machine needs: `make run` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# This machine's local CPU build of torch (small; see docs/models.md "Which torch"). GPU images pin their own.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-unit test-integration chaos bench services clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/darkroom run --host $(HOST) --port $(PORT)

services:
	bash scripts/ensure-services.sh

test: install services
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install services
	$(PY) -m pytest tests/integration

# The fault tests at the issue's scale (1,000 jobs, 20 kills, 30 s outages); `make test` runs them small.
chaos: install services
	DARKROOM_CHAOS_SCALE=full $(PY) -m pytest tests/chaos -s -q -p no:cacheprovider

bench: install services
	$(PY) -m bench.overhead
	$(PY) -m bench.content
	$(PY) -m bench.file_upload
	$(PY) -m bench.cache

clean:
	rm -rf $(VENV) .darkroom .pytest_cache
