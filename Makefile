# pmcp — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev dist test test-env test-unit demo lint bench clean distclean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,dev]'
	touch $(STAMP)

dev: $(STAMP)

# dist/pmcp, one reproducible file; wheels are cached in build/wheels (offline once filled).
dist: $(STAMP)
	$(PY) build.py

# Packages and a Docker engine for the tests (root only; without it the Docker tests skip).
test-env:
	@if [ "$$(id -u)" = 0 ]; then scripts/ensure-test-env; \
	else echo "make: not root, so no scripts/ensure-test-env: Docker tests may be skipped" >&2; fi

# pytest exits 5 when it ran no test: that is a failure too.
test: test-env dist
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc = 5 ]; then echo "make: pytest ran no test (exit 5)" >&2; fi; exit $$rc

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

demo: $(STAMP)
	$(PY) -m pmcp demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: dist
	$(PY) bench/run.py

clean:
	rm -rf dist *.egg-info

distclean: clean
	rm -rf build
