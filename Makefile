# onair — the two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
BENCH  ?= bench/api.py
PYTEST_ARGS ?=
# pytest-xdist processes: most e2e time is spent waiting on real-time media
TEST_WORKERS ?= 2

# First interpreter that is Python >= 3.11: $PYTHON, python3.11..python3.13,
# python3, then pyenv shims.
define find_python
for c in "$${PYTHON:-}" python3.11 python3.12 python3.13 python3 "$$HOME/.pyenv/shims/python3" \
         "$$(command -v pyenv >/dev/null 2>&1 && pyenv which python3 2>/dev/null)"; do \
    [ -n "$$c" ] || continue; \
    p="$$(command -v "$$c" 2>/dev/null)" || continue; \
    "$$p" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null && { echo "$$p"; exit 0; }; \
done; exit 1
endef

.PHONY: run test bench lint fmt system-run system-test system-bench vendor-js clean-venv

system-run:
	@deploy/ensure-system.sh run

system-test:
	@deploy/ensure-system.sh run test

system-bench:
	@deploy/ensure-system.sh run test bench

# Browser libraries (hls.js) come from the npm registry through npm; Debian's
# npm is installed only when no npm is on the machine.
vendor-js:
	@command -v npm >/dev/null 2>&1 || deploy/ensure-system.sh npm
	@deploy/vendor-js.sh

$(PY):
	@py="$$( $(find_python) )" || { echo "make: Python >= 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }; \
	echo "make: creating $(VENV) with $$py" >&2; \
	"$$py" -m venv $(VENV) || { deploy/ensure-system.sh run && rm -rf $(VENV) && "$$py" -m venv $(VENV); }
	@$(PIP) install -q --upgrade pip setuptools wheel

# Re-install when pyproject.toml changes (stamp files).
$(VENV)/.stamp-run: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	@touch $@ $(VENV)/.stamp-run

run: system-run $(VENV)/.stamp-run vendor-js
	$(VENV)/bin/onair serve

test: system-test $(VENV)/.stamp-test vendor-js
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests $(PYTEST_ARGS)

bench: system-bench $(VENV)/.stamp-test
	@for f in $(BENCH); do echo "== $$f" >&2; $(PY) $$f || exit 1; done

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
