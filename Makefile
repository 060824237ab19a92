# Two commands on a fresh machine: `make train` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: train test demo lint format clean-venv

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 13), f"Python 3.13 needed, found {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Ray (collector=ray) is optional for a run; the tests need it, so CI runs the Ray collector's tests.
$(RAY_STAMP): $(STAMP) requirements-ray.txt
	$(BIN)/pip install --quiet -r requirements-ray.txt
	touch $(RAY_STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(RAY_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The shipped agents (docs/RESULTS.md): the 1-1 agent plays 5 episodes of 1-1, the World-1 agent
# 2 of each of 1-1..1-4. Each writes its table, results files and the GIFs of the first and
# best episode of each level to outputs/evaluate/<date>/<time>/.
MODEL ?= models/mario-1-1.safetensors
WORLD_MODEL ?= models/mario-world-1.safetensors
demo: $(STAMP)
	$(BIN)/python evaluate.py ckpt_path=$(MODEL) env.level=1-1 episodes=5 video=true $(ARGS)
	$(BIN)/python evaluate.py ckpt_path=$(WORLD_MODEL) episodes=2 video=true $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
