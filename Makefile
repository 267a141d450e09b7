# `make run` and `make test` each do all their own setup on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	FLASK_DEBUG=1 $(BIN)/python -m portal.dev

test: $(STAMP) chromium
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check portal tests

# Debian's Chromium for the browser tests, and zbar-tools to decode the QR codes they see;
# needs root (CI runs as root). Without them the browser tests skip and say why, unless
# PORTAL_REQUIRE_BROWSER=1.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v zbarimg >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium zbar-tools >/dev/null; \
	  else \
	    echo "chromium is not installed and this user cannot install it: browser tests will skip"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache

# Portal against bare Flask under the same gunicorn and load (bench/run.py). Debian's wrk
# drives the load; it needs root to install, as chromium does. Without it the benchmarks
# fall back to a Python load generator and say so.
bench: $(STAMP)
	@if ! command -v wrk >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is not installed and this user cannot install it: using the Python load generator"; \
	  fi; \
	fi
	$(BIN)/python bench/run.py
