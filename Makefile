# tuneserve: `make run` sets everything up and serves; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
LOCK   := requirements/constraints.txt
export TUNESERVE_HOME ?= $(CURDIR)/var

.PHONY: run test test-fast browser install lock lint docs-settings example bench-serve bench-search gpu-pack gpu-rehearsal clean

# Every package is pinned by the lock (a constraints file: it pins what an extra pulls in, installs nothing itself).
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[train,dev,gpu]'
	touch $@

install: $(VENV)/.installed

# Re-resolve every extra to the newest releases pyproject.toml allows, for every platform; commit the result.
lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --upgrade -q -o $(LOCK)

run: install
	$(VENV)/bin/tuneserve bootstrap
	PORT=$(PORT) $(VENV)/bin/tuneserve serve

# The tests start their own Redis and PostgreSQL (tests/services.py); the browser tests need a Chromium:
# Playwright's (installed here when none is found and the download works) or the system's.
# Two pytest-xdist processes by default (each has its own services, homes and ports; one module per
# process, so module fixtures start once); TEST_WORKERS=0 runs it in one. Times: README.
TEST_WORKERS ?= 2
test: install browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# No browser, no training: the API, the stores and the service's parts, in two processes.
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not browser and not training"

browser: install
	@$(PY) -m tests.browser || $(PY) -m playwright install chromium || true

# The README's fine-tuning example: the committed ants/bees photos as the archive a user would upload.
example:
	mkdir -p var
	$(PYTHON) -c "import shutil; shutil.make_archive('var/ants_bees', 'zip', 'tests/data', 'ants_bees')"

# Benchmarks (results in docs/benchmarks.md); BentoML, the serving peer, only installs for these.
bench-serve: install
	$(PY) -m pip install -q -c $(LOCK) -e '.[bench]'
	TUNESERVE_HOME=/tmp/perf-home $(VENV)/bin/tuneserve bootstrap
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.serving.serve --home /tmp/perf-home --write-docs

bench-search: install
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.training.search --workers 2 --write-docs

# The GPU proof (docs/gpu.md): pack what the device lacks, rehearse the device run here on the CPU.
gpu-pack:
	bash scripts/gpu_pack.sh

gpu-rehearsal: install
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.gpu.gpu_e2e --device cpu --quick --out /tmp/gpu-e2e-rehearsal
	$(PY) -m bench.gpu.gpu_e2e --check /tmp/gpu-e2e-rehearsal/gpu_e2e.json

# The README's settings table, from core/settings.py's field descriptions (a test checks they agree).
docs-settings:
	$(PY) scripts/settings_doc.py --write

lint: install
	$(PY) scripts/check_tests_own_data.py
	$(PY) scripts/check_rooms.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core models jobs dataset_store feedback transport service trainer tuneserve bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
