# tuneserve: `make run` sets everything up and serves; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
export TUNESERVE_HOME ?= $(CURDIR)/var

.PHONY: run test install lint example bench-serve bench-search gpu-pack gpu-rehearsal clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,gpu]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/tuneserve bootstrap
	PORT=$(PORT) $(VENV)/bin/tuneserve serve

test: install
	$(PY) -m pytest -q

# The README's fine-tuning example: the committed ants/bees photos as the archive a user would upload.
example:
	mkdir -p var
	$(PYTHON) -c "import shutil; shutil.make_archive('var/ants_bees', 'zip', 'tests/data', 'ants_bees')"

# Benchmarks (results in docs/benchmarks.md); BentoML, the serving peer, only installs for these.
bench-serve: install
	$(PY) -m pip install -q -e '.[bench]'
	TUNESERVE_HOME=/tmp/perf-home $(VENV)/bin/tuneserve bootstrap
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.serve --home /tmp/perf-home --write-docs

bench-search: install
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.search --workers 2 --write-docs

# The GPU proof (docs/gpu.md): pack what the device lacks, rehearse the device run here on the CPU.
gpu-pack:
	bash scripts/gpu_pack.sh

gpu-rehearsal: install
	flock /tmp/tuneserve-bench.lock $(PY) -m bench.gpu_e2e --device cpu --quick --out /tmp/gpu-e2e-rehearsal
	$(PY) -m bench.gpu_e2e --check /tmp/gpu-e2e-rehearsal/gpu_e2e.json

lint: install
	$(PY) scripts/check_tests_own_data.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy core models jobs dataset_store feedback transport service trainer tuneserve
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
