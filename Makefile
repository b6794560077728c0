# make test: set up .venv (CPU torch from the local wheel when no GPU), then ruff, mypy, pytest.
# make demo: set up .venv, then fine-tune MiniLM on the tweet corpus for one short run.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: test test-slow demo demo-dino demo-dino-shards bench lint typecheck data clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# A machine with a GPU keeps the torch it has; here the pinned CPU build is local and fast.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,plot,dino,finetune]"
	touch $(STAMP)

data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	   echo "note: Fashion-MNIST missing; install Debian's dataset-fashion-mnist")

lint: $(STAMP)
	$(BIN)/ruff check src tests bench train.py phase5_big_run.py
	$(BIN)/ruff format --check src tests bench train.py phase5_big_run.py

typecheck: $(STAMP)
	$(BIN)/mypy src

test: $(STAMP) data lint typecheck
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

test-slow: $(STAMP) data
	$(BIN)/python -m pytest -q -m slow

demo: $(STAMP)
	$(BIN)/python train.py --num_epochs 1 --max_train_samples 640 --max_eval_samples 256 --output_dir runs/demo --overwrite_output_dir

demo-dino: $(STAMP) data
	rm -rf runs/demo-dino
	@# --recipe cpu-demo: the CPU recipe's 15 flags (recipes/dino/flags.py RECIPES, docs/phase5.md)
	OMP_NUM_THREADS=1 $(BIN)/python phase5_big_run.py --recipe cpu-demo --output-dir runs/demo-dino

demo-dino-shards: $(STAMP) data
	rm -rf runs/demo-dino-shards
	@# The same recipe trained from WebDataset shards: Fashion-MNIST's 60,000 training images as PNGs,
	@# written to 6 shards by make_shards, every 10th sample held out for k-NN (docs/phase5.md, Shards).
	$(BIN)/python examples/fashion_mnist_folder.py runs/demo-dino-shards/images
	$(BIN)/python -m lrsched.recipes.dino.make_shards runs/demo-dino-shards/images 'runs/demo-dino-shards/shards/train-%06d.tar'
	OMP_NUM_THREADS=1 $(BIN)/python phase5_big_run.py --recipe cpu-demo --data-dir runs/demo-dino-shards/shards --output-dir runs/demo-dino-shards/run

bench: $(STAMP) data
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/throughput_finetune.py
	$(BIN)/python bench/dino_knn.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/schedule_study.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
