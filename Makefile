# pmcp — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev dist test test-env test-unit demo lint bench clean distclean

# The first run takes a minute or two (the dependencies are downloaded): say so, and show pip's progress.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: pmcp needs Python 3.11 or newer (Debian 12: apt install python3 python3-venv); $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@echo "make: creating $(VENV) and installing pmcp's dependencies (first run only, a minute or two) ..." >&2
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# One line per package as progress; setuptools' notice about editable installs is not for users.
	$(PY) -m pip install -e '.[server,dev]' 2>&1 | grep -E '^(Collecting|Successfully|ERROR|error)' || true
	@test -x $(VENV)/bin/pmcp || { echo "make: pip install failed: run $(PY) -m pip install -e '.[server,dev]'" >&2; exit 1; }
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

# make demo PORT=9000 (0: any free port)
PORT ?= 8080
demo: $(STAMP)
	$(PY) -m pmcp demo --port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: dist
	$(PY) bench/run.py

clean:
	rm -rf dist *.egg-info

distclean: clean
	rm -rf build
