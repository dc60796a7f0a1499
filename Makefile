# One entry point for users and CI. `make train` and `make test` create .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Python >= 3.12 (JAX 0.12 needs it): the first of these that runs.
PYTHON ?= $(shell for p in python3.12 python3.13 python3 /root/.pyenv/versions/3.12*/bin/python3.12; do \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
export TF_CPP_MIN_LOG_LEVEL ?= 2
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py

.PHONY: venv train test test-slow bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 not found: set PYTHON=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

# tcmalloc (Debian: libtcmalloc-minimal4) where installed: glibc malloc maps and unmaps XLA's
# large temporaries every step, and the page faults slow weight-bound layers down
# (benchmarks/RESULTS.md). Compare with PyTorch only under the same allocator.
TCMALLOC ?= /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
# XLA:CPU's oneDNN convolutions and matmuls (experimental XLA flags, CPU only, ignored by GPU
# and TPU backends): a faster training step here (benchmarks/RESULTS.md). Not used by
# `make test`, whose persistent compilation cache cannot serialise oneDNN executables;
# `CPU_XLA_FLAGS=` turns them off.
CPU_XLA_FLAGS ?= --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true
FAST_CPU := $(if $(wildcard $(TCMALLOC)),LD_PRELOAD=$(TCMALLOC)) XLA_FLAGS="$(CPU_XLA_FLAGS) $(XLA_FLAGS)"

# ARGS: more flags for train.py, e.g. ARGS="--config.data.manual_dir=~/Downloads".
ARGS ?=
train: venv
	$(FAST_CPU) $(PY) train.py --config $(CONFIG) --workdir $(WORKDIR) $(ARGS)

bench: venv
	$(FAST_CPU) $(PY) benchmarks/train_step.py --batch_size 1,16 --steps 10

# Two pytest-xdist workers, a test file each at a time (its module fixtures built once): most
# of a test's time is single-threaded compilation and subprocess start-up, so two overlap.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: venv
	$(PYTEST) tests -m "not slow"

test-slow: venv
	$(PYTEST) tests -m slow

clean:
	rm -rf workdirs
