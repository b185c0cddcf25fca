# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   - the whole MMT-ARD pipeline on the built-in world (offline, CPU, 10-25 min on 2 cores)
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install lock clean

# constraints.txt pins the package set the README's numbers were measured with (refresh: make lock)
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmt-ard demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# the unit tests alone (tests/unit, a few minutes): the set to run while editing
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m unit $(ARGS)

# ruff's lint and format checks (pinned in pyproject's test extra); `ruff format` fixes the layout
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Re-resolve the newest versions pyproject.toml allows and pin them (then rerun the tests and the demo).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[test,benchmark]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v -i '^mmt-ard' > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) runs
