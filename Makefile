# agelatent — run `make help` for the targets. Everything installs itself into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU-only default: the CPU wheel of this exact version (pip finds it locally where a machine keeps one).
# Only used when the venv has no torch yet, so a GPU user's existing CUDA build is never replaced;
# on a GPU machine, `make install TORCH_SPEC=torch EXTRAS=gpu,dev` takes the CUDA build from PyPI.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help:  ## show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@# onnx2torch without its torchvision pin (see pyproject.toml); agelatent never needs torchvision.
	$(BIN)/python -m pip show --quiet onnx2torch 2>/dev/null || $(BIN)/python -m pip install --quiet --no-deps onnx2torch==1.5.15
	@touch $@

install: $(STAMP)  ## create .venv and install agelatent with its CPU runtime and dev tools

models: install  ## fetch, extract and sha256-check the pretrained weights (cached; no network once cached)
	$(BIN)/agelatent-models fetch

sample: models  ## write a grid of generated faces annotated with predicted age/gender, plus a CSV
	$(BIN)/agelatent-sample $(ARGS)

train: models  ## train the SAC age-editing policy on the embedded world (timings: docs/measurements.md); Hydra overrides in ARGS="..."
	$(BIN)/agelatent-train $(ARGS)

bench: models  ## benchmarks -> results/bench/*.json + report.md: world.score by batch vs its networks, env step, SAC vs SB3, editors, identity port
	$(BIN)/agelatent-bench --out results/bench $(ARGS)

PHOTO ?=
LATENT ?=
TARGETS ?=
edit: models  ## age the faces in PHOTO (a photo or a folder), or again the face LATENT (a saved *_latent.pt), towards TARGETS (ages, or +N/-N years; default: conf/edit.yaml's) -> results/edit/<run>/ (PNG, CSV)
	@test -n "$(PHOTO)$(LATENT)" || { echo "make edit needs PHOTO=<a photo or a folder of photos> (or LATENT=<a *_latent.pt an earlier edit saved>)"; exit 2; }
	$(BIN)/agelatent-edit $(if $(PHOTO),photo="$(PHOTO)") $(if $(LATENT),latent="$(LATENT)") $(if $(TARGETS),'targets="$(TARGETS)"') $(ARGS)

measurements: install  ## regenerate docs/measurements.md (and README's photo figures) from results/bench, RUN=runs/<name>, EVAL="results/eval/<name> ..." and CURVES=results/curves/<name>; KEEP=1 keeps sections whose artefact is not here
	$(BIN)/python experiments/measurements.py --readme README.md $(if $(KEEP),--keep-missing) $(if $(RUN),--run $(RUN)) $(if $(EVAL),--eval $(EVAL)) $(if $(CURVES),--curves $(CURVES))

curves: models  ## learning curves of RUN=runs/<name> on the validation faces (reward, realigned, independent) -> results/curves/<name>/
	$(BIN)/python experiments/learning_curves.py --run $(RUN) $(ARGS)

EDITOR ?= local_linear_walk
tune: models  ## tune a baseline on validation faces, EDITOR=local_linear_walk|gradient_descent|global_direction|random_walk -> results/tune/<editor>/tuning.md
	rm -rf results/tune/$(EDITOR)
	$(BIN)/agelatent-eval -m experiment=tune_$(EDITOR) hydra.sweep.dir=results/tune/$(EDITOR) $(ARGS) || echo "tune: some jobs failed (their FAILED.txt); ranking the rest"
	$(BIN)/python experiments/tuning.py results/tune/$(EDITOR)

gpu-smoke: install  ## paper-grade world on CUDA, stand-in weights: throughput, SAC, eval, copy check (<5 min; no GPU: skips)
	@mkdir -p results/bench
	$(BIN)/python experiments/gpu_smoke.py --json results/bench/gpu_smoke.json

PROFILE ?= quick
table1: models  ## Table 1, methods comparison -> results/table1/ (PROFILE=quick: minutes on 2 CPU cores | full)
	$(BIN)/python experiments/tables.py table1 --profile $(PROFILE) --fresh

table2: models  ## Table 2, identity-threshold sweep + Pareto plot -> results/table2/
	$(BIN)/python experiments/tables.py table2 --profile $(PROFILE) --fresh

table3: models  ## Table 3, reward-term ablation -> results/table3/
	$(BIN)/python experiments/tables.py table3 --profile $(PROFILE) --fresh

table4: models  ## Table 4, target conditioning x action parameterisation -> results/table4/
	$(BIN)/python experiments/tables.py table4 --profile $(PROFILE) --fresh

figures: models  ## edit grids (faces x target ages) for the table-1 policy and the baselines -> results/figures/
	$(BIN)/python experiments/tables.py figures --profile $(PROFILE) --fresh

tables: table1 table2 table3 table4 figures  ## every table and figure

test: models  ## the CI suite: every test, slow ones included (GPU tests skip without CUDA)
	$(BIN)/pytest $(PYTEST_ARGS)

test-quick: models  ## the fast inner loop: skip tests marked slow
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-full: lint test  ## lint, then the whole suite

lint: install  ## ruff check + format check
	$(BIN)/ruff check agelatent hydra_plugins tests experiments
	$(BIN)/ruff format --check agelatent hydra_plugins tests experiments

format: install  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix agelatent hydra_plugins tests experiments
	$(BIN)/ruff format agelatent hydra_plugins tests experiments

slurm-up:  ## (root) install if missing and start a single-node SLURM here: partitions low/high, pre-emption, sacct (cluster/slurm.sh); idempotent
	cluster/slurm.sh up

slurm-down:  ## (root) stop the daemons of slurm-up (configs and job records stay)
	cluster/slurm.sh down

clean:  ## remove caches and sample outputs (keeps .venv, runs/ and the model cache)
	rm -rf .pytest_cache .ruff_cache outputs multirun

ARGS ?=

.PHONY: help install models sample train bench measurements curves tune gpu-smoke table1 table2 table3 table4 figures tables test test-quick test-full lint format slurm-up slurm-down clean
