# Set-up, demo, tests and benchmarks. `make demo` and `make test` work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is what `pip install torch==...` finds here; GPU users
# install a CUDA build of the same version first (see README.md) and `make install` keeps it.
TORCH_VERSION ?= 2.13.0

.PHONY: install system-deps demo test lint bench reproduce clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Java for pycocoevalcap's tokenizer and METEOR; slurm-wlm and munge for the SLURM test.
# Needs root (CI, containers); elsewhere it says what is missing and the tests skip that part.
system-deps:
	@sh tests/install_system_deps.sh

demo: install
	$(BIN)/snakemake --profile profiles/local
	@cat results/summary.md

test: install system-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

lint: install
	$(BIN)/snakemake --lint

bench: install
	$(BIN)/python -m fedumm.bench

# The papers' tables in miniature over seeds, and which of their directions hold (about an hour on
# 2 CPU cores; SCALE=gpu for the larger setting). Not part of `make test`.
SCALE ?= cpu
reproduce: install
	$(BIN)/python -m fedumm.reproduce --scale $(SCALE)

clean:
	rm -rf results logs benchmarks .snakemake report.html reproduce
