# Two commands do the whole setup on a fresh machine:
#   make test    -- create .venv, install lmccheck with its test extras and the
#                   embedded dataset, run the unit tests
#   make claims  -- the same setup, then the CPU-scale claims; writes report/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmccheck-installed
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=
CLAIMS_ARGS ?=
# CLAIMS=S2,S5 runs only those claims (pytest --lmc-claim)
CLAIMS ?=
CLAIMS_SELECT := $(if $(CLAIMS),--lmc-claim '$(CLAIMS)')
# make claims runs the CPU tier on this many pytest-xdist workers, each with an even share of the cores
# (one setting's checks stay on one worker); CLAIMS_WORKERS=1 runs it in one process
CLAIMS_WORKERS ?= 2
CLAIMS_XDIST := $(if $(filter-out 0 1,$(CLAIMS_WORKERS)),-n $(CLAIMS_WORKERS) --dist loadgroup)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test test-fast lint claims install data bench gpu-claims gpu-check gpu-dryrun clean-report

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "lmccheck: creating $(VENV) and installing lmccheck with its test extras (torch, torchvision, scipy,"
	@echo "lmccheck: pytest, ...); torch is the bulk: about 1 GB, plus about 3 GB of NVIDIA CUDA libraries on Linux x86-64"
	$(PYTHON) -m venv $(VENV)
	@# pip shows its own progress on a terminal and stays quiet in logs (CI)
	$(PY) -m pip install $$([ -t 1 ] || echo --quiet) -e '.[test]'
	touch $(STAMP)

# The embedded dataset: Debian's dataset-fashion-mnist (skipped when LMCCHECK_DATA is set).
data:
	@if [ -n "$$LMCCHECK_DATA" ] || [ -e $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -e $(FMNIST_DIR)/train-images-idx3-ubyte ]; then \
		echo "Fashion-MNIST present"; \
	else \
		echo "installing dataset-fashion-mnist (Debian package)"; \
		$(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }; \
	fi

test: install data
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the edit loop: the unit tests without the slow ones (subprocesses, tools, training, sampling), on 2 workers
test-fast: install data
	$(PY) -m pytest tests -m "not gpu and not slow" -n 2 $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, bugbear) over the whole tree, mypy over lmccheck, fixtures and claims (both
# configured in pyproject.toml), and no import circle among lmccheck's modules; CI runs it first
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) tools/import_cycles.py

claims: install data
	$(PY) -m pytest claims $(CLAIMS_XDIST) $(CLAIMS_SELECT) $(CLAIMS_ARGS)

gpu-claims: install data
	$(PY) -m pytest claims -m gpu $(CLAIMS_SELECT) $(CLAIMS_ARGS)

# The prepared device check: unit tests with CUDA, GPU benchmarks, the claims' GPU settings at the dry-run size;
# log, report and benchmark JSON in $(GPU_CHECK_OUT). It installs nothing (the device machines have torch
# and the test stack: pip install --no-deps --no-build-isolation -e .); it uses the virtualenv when there is one, else python3.
GPU_CHECK_OUT ?= gpu-check
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check: data
	PY=$(GPU_PY) bash tools/gpu_check.sh $(GPU_CHECK_OUT)

# The GPU tier's dry run: every -m gpu setting's whole path at a tiny size (--lmc-budget dryrun) on whatever
# device is there, the CPU included, with a synthetic CIFAR-10 stand-in so the CIFAR-10 path runs offline.
# Its own data root, store and report (a synthetic dataset must never share a store with the real one).
DRYRUN_DIR ?= .lmccheck-dryrun
gpu-dryrun: install data
	@[ -e $(DRYRUN_DIR)/data/cifar10.safetensors ] || $(PY) -m lmccheck.cli data synthetic cifar10 --root $(DRYRUN_DIR)/data
	$(PY) -m pytest claims -m gpu --lmc-budget dryrun --lmc-data-root $(DRYRUN_DIR)/data \
		--lmc-cache $(DRYRUN_DIR)/store --lmc-report $(DRYRUN_DIR)/report $(CLAIMS_XDIST) $(CLAIMS_SELECT) $(CLAIMS_ARGS)

bench: install data
	$(PY) -m pytest benchmarks --benchmark-only $(PYTEST_ARGS)

clean-report:
	rm -rf report

# Mutation testing (cosmic-ray) of one module at a time against the unit tests that
# cover it; not part of `make test` or CI.  MODULE=permutation runs one module (default:
# all of them, one after the other); MUTATION_ARGS=--timeout 60 / --resume / --report.
# Prints the score and the surviving mutants; summaries go to mutation/<module>.txt.
MODULE ?=
MUTATION_ARGS ?=
.PHONY: mutation
mutation: install
	@$(PY) -c "import cosmic_ray" 2>/dev/null || $(PY) -m pip install --quiet -e '.[test,mutation]'
	$(PY) tools/mutation.py $(MODULE) $(MUTATION_ARGS)
