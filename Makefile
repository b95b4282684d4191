# The README's commands. Everything a fresh machine needs is installed by these targets:
# the Python venv, the Apache Kafka jars (Maven Central), ClickHouse (the chdb-core wheel),
# and Debian's chromium for the board's browser test.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test lint install stack-install browser bench drills drills-loop stack-up stack-down clean

## demo: set everything up and run the whole pipeline with a simulated city; Ctrl-C stops it all
demo: install stack-install
	$(BIN)/haochaping demo

## test: install what is missing, start the real Kafka and ClickHouse for the tests, run them
## (all but the fault drills, which take minutes each: `make drills`)
test: install stack-install browser
	$(BIN)/python -m pytest -m "not drill"

## lint: ruff (lint + format check) and mypy (strict on the domain core)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

## stack-install: bring the Apache Kafka jars from Maven Central once (cached in ~/.m2 and var/)
stack-install: install
	$(BIN)/haochaping stack install

## browser: Debian's chromium and a Chinese font for the board's browser test (Playwright downloads no browser)
browser:
	@{ command -v chromium && fc-list | grep -qi wqy; } >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; }

stack-up: stack-install
	$(BIN)/haochaping stack up

stack-down:
	$(BIN)/haochaping stack down

## bench: the end-to-end benchmark (prints figures; see README "Measured")
bench: install stack-install
	$(BIN)/python bench/e2e_bench.py

## drills: fault drills (broker restart, ClickHouse outage, kill -9 of a worker)
drills: install stack-install
	$(BIN)/python -m pytest tests/drills -m drill

# The drills matching K, N times over, keeping the logs of a run that failed or warned.
drills-loop: install stack-install
	tests/drills/loop.sh -k "$(or $(K),two_workers)" -n "$(or $(N),20)"

clean:
	$(BIN)/haochaping stack down || true
	rm -rf var
