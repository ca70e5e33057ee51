# The two commands: `make demo` and `make test`. Both provision the host first (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
ARCHS ?= amd64,arm64,s390x

.PHONY: provision lint test test-unit test-plugin test-integration test-example test-wheel demo bench clean-testbed

provision:
	scripts/provision-host

ACTIONLINT ?= $(VENV)/bin/actionlint
WORKFLOWS := $(wildcard example_project/.github/workflows/*.yml)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(ACTIONLINT) $(WORKFLOWS)

test-unit:
	$(PYTEST) tests/unit -q

test-plugin:
	$(PYTEST) tests/plugin -q

test-integration:
	$(PYTEST) tests/integration -n 2 -m "not serial" --arch-required
	$(PYTEST) tests/integration -m serial --arch-required

test-example:
	example_project/build.sh
	cd example_project && ../$(PYTEST) tests --arch=$(ARCHS) --arch-required -q \
	  --multiarch-report=../.multiarch-report.json

# The installable artifact: sdist and wheel built, the wheel installed into a fresh venv, and
# there (no pytester, no checkout on sys.path) `pytest --help` and a gate run on a corpus image.
test-wheel:
	PYTHON=$(PY) scripts/wheel-smoke

# The whole suite: provisioning, lint, unit, plugin and integration tiers, the example project.
# Tests marked `serial` switch binfmt handlers off for the whole host, so they run in a pass of
# their own after the parallel one.
test: provision
	$(MAKE) lint
	$(PYTEST) tests --arch-required -n 2 -m "not serial"
	$(PYTEST) tests --arch-required -m serial
	$(MAKE) test-example
	$(MAKE) test-wheel

demo: provision
	example_project/build.sh
	cd example_project && ../$(PYTEST) tests --arch=$(ARCHS) -v --multiarch-report=../.multiarch-report.json

bench: provision
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
