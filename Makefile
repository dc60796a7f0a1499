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

$(VENV)/.installed: requirements.txt
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 not found: set PYTHON=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# tcmalloc (Debian: libtcmalloc-minimal4) where installed: glibc malloc maps and unmaps XLA's
# large temporaries every step, and the page faults cost JAX ~2x CPU time on weight-bound
# layers (benchmarks/RESULTS.md). Compare with PyTorch only under the same allocator.
TCMALLOC ?= /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
WITH_ALLOC := $(if $(wildcard $(TCMALLOC)),LD_PRELOAD=$(TCMALLOC))

train: venv
	$(WITH_ALLOC) $(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)

bench: venv
	$(WITH_ALLOC) $(PY) benchmarks/train_step.py --batch_size 1,16 --steps 10

test: venv
	$(PY) -m pytest -q tests -m "not slow"

test-slow: venv
	$(PY) -m pytest -q tests -m slow

clean:
	rm -rf workdirs
