# jepa-stream front door. `make help` lists the targets.

CARGO ?= cargo
DATASETS ?= datasets
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
# Point at an existing stl10_binary/ folder to skip the download.
STL10_DIR ?=
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The three binaries are built by one cargo command, so the crates they share are compiled
# once, with one feature set; the targets then run them from the target folder.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BINARIES = -p jepa-ingest -p jepa-trainer -p jepa-probe --bins
BUILD_CPU = $(CARGO) build --release --quiet $(BINARIES)
# The GPU build carries both GPU backends (CUDA, and wgpu for Vulkan, Metal and DX12) beside
# the CPU; `--device` (DEVICE here) chooses at run time.
GPU_FEATURES = jepa-trainer/cuda,jepa-trainer/wgpu,jepa-probe/cuda,jepa-probe/wgpu
BUILD_GPU = $(CARGO) build --release --quiet $(BINARIES) --features $(GPU_FEATURES)
INGEST_RELEASE = $(BUILD_CPU) && $(TARGET_DIR)/release/ingest
TRAIN_CPU = $(BUILD_CPU) && $(TARGET_DIR)/release/train
TRAIN_GPU = $(BUILD_GPU) && $(TARGET_DIR)/release/train
PROBE_CPU = $(BUILD_CPU) && $(TARGET_DIR)/release/probe
PROBE_GPU = $(BUILD_GPU) && $(TARGET_DIR)/release/probe
# Where `make train` and `make probe` run the STL-10 recipe: a CUDA GPU unless told otherwise
# (`cpu`, `wgpu`, `auto`, `cuda:N`); without one, `train` says what the run would take on this
# machine's CPU before doing anything. SET holds config overrides, `key=value` separated by spaces.
DEVICE ?= cuda
SET ?=
SETS = $(foreach field,$(SET),--set $(field))
# The tests build Burn with the wgpu backend in, so `make test-wgpu` reuses `make test`'s build,
# and the trainer with MPI, so `make test-distributed` does.
TEST_FEATURES = --features jepa-probe/wgpu,jepa-trainer/mpi
RUNS ?= runs
# `make bench-train`'s PyTorch side: the eager reference, in a venv of its own (torch is large).
TORCH_REFERENCE ?= ../shared/bench/ref_ijepa_torch.py
BENCH_VENV ?= .venv-bench
# `make test-interop`'s other side: PyTorch, timm and safetensors in a venv of their own (torch
# is large: CI keeps this venv outside the clone, beside the Cargo target folder).
INTEROP_VENV ?= .venv-interop
INTEROP_PYTHON = $(INTEROP_VENV)/bin/python
# The kit that builds and runs the CUDA binary on a lent GPU machine (`make bench-gpu`).
GPU_KIT ?= ../shared/gpu

.PHONY: help setup build build-gpu reproduce-seed ingest ingest-fashion masks train train-demo probe probe-demo demo compare sweep test test-rust test-wgpu stl10-smoke test-faults test-distributed bench-distributed test-python check-docs test-interop interop-venv check-gpu lint bench bench-ingest bench-loader bench-train bench-probe bench-gpu clean

help:
	@echo "make setup           Debian's Fashion-MNIST package, OpenMPI, and a Python venv with polars + pyarrow"
	@echo "make build           the ingest, train and probe release binaries (CPU), in one cargo build"
	@echo "make build-gpu       the same with the CUDA and wgpu backends in (choose with --device)"
	@echo "make ingest-fashion  Fashion-MNIST IDX -> $(DATASETS)/fashion-mnist (Parquet shards + manifest)"
	@echo "make ingest          STL-10 -> $(DATASETS)/stl10 (downloads unless STL10_DIR=... is given)"
	@echo "make masks           $(RUNS)/masks.png: a config's context and target blocks over real images, at its own grid"
	@echo "make train-demo      I-JEPA on Fashion-MNIST on the CPU (configs/demo-fashion.toml) -> $(RUNS)/demo-fashion"
	@echo "make train           the seed's STL-10 recipe (CONFIG) on DEVICE (default cuda; SET=\"key=value ...\" overrides)"
	@echo "make probe           features, linear probe, kNN and report for the STL-10 run (encoders on DEVICE)"
	@echo "make reproduce-seed  the seed's STL-10 experiment (I-JEPA and MAE, its probes) and its table beside ours (GPU)"
	@echo "make probe-demo      features, linear probe, kNN and report for runs/demo-fashion (CPU)"
	@echo "make demo            the whole path on Fashion-MNIST on the CPU: ingest, train, probe, results table"
	@echo "make compare         I-JEPA, I-JEPA with pixel targets, MAE, a random encoder and raw pixels on Fashion-MNIST (CPU) -> $(RUNS)/compare-fashion"
	@echo "make sweep           train and score every recipe of SWEEP_PLAN -> $(RUNS)/sweep/sweep.parquet (one row per run)"
	@echo "make test            all Rust tests, the Python polars/pyarrow checks, and every command in README.md and docs/"
	@echo "make check-docs      every fenced shell command in README.md and docs/ names a real target, subcommand and option"
	@echo "make test-wgpu       training, checkpoints and probe features on wgpu against the CPU (lavapipe where no GPU)"
	@echo "make test-faults     two writers, damaged checkpoints and other faults, through the real binaries"
	@echo "make test-distributed  mpirun -n 2 train against one process: the same losses, parameters, teacher and moments"
	@echo "make stl10-smoke     the seed's STL-10 path at full ViT-B/16 size on the CPU: download, ingest, 2 steps, every probe"
	@echo "make test-interop    probe export loaded by timm and an official I-JEPA checkpoint imported, checked in PyTorch"
	@echo "make lint            rustfmt and clippy"
	@echo "make bench-ingest    ingest throughput against a plain copy on the same disk"
	@echo "make bench-loader    prefetcher images/s (STL-10 and Fashion-MNIST recipes) against a plain copy"
	@echo "make bench-train     the CPU training step and feature extraction beside PyTorch eager's, as a ratio"
	@echo "make bench-probe     frozen-encoder feature extraction images/s by batch size and threads"
	@echo "make bench-distributed  the demo step's images/s: one process, mpirun -n 1 and -n 2 on this machine's CPU"
	@echo "make bench-gpu       build the CUDA binary for a GPU machine and say how to run it there"
	@echo "make check-gpu       type-check the GPU build, CUDA (with NCCL and MPI) and wgpu (no GPU needed)"

setup:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist mate-backgrounds fonts-dejavu-core python3-venv mesa-vulkan-drivers libvulkan1
	$(SUDO) apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev libclang-dev
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q polars pyarrow

build:
	$(BUILD_CPU)

build-gpu:
	$(BUILD_GPU)

ingest:
ifneq ($(strip $(STL10_DIR)),)
	$(INGEST_RELEASE) stl10 --from $(STL10_DIR) --out $(DATASETS)/stl10
else
	$(INGEST_RELEASE) stl10 --download --out $(DATASETS)/stl10
endif

ingest-fashion:
	$(INGEST_RELEASE) fashion-mnist --from $(FASHION_MNIST_DIR) --out $(DATASETS)/fashion-mnist

# A config's masks over real test images, as the paper draws them (nothing trained needed).
MASKS_CONFIG ?= configs/demo-fashion.toml
masks: $(if $(filter $(MASKS_CONFIG),configs/demo-fashion.toml configs/compare-fashion.toml),ingest-fashion)
	$(PROBE_CPU) masks --config $(MASKS_CONFIG) --out $(RUNS)/masks.png

# A run folder with checkpoints is continued (a finished run stays as it is).
train-demo: ingest-fashion
	if [ -d $(RUNS)/demo-fashion/checkpoints ]; then $(TRAIN_CPU) --resume $(RUNS)/demo-fashion; \
	else $(TRAIN_CPU) --config configs/demo-fashion.toml --runs $(RUNS); fi

# The STL-10 run `make train` and `make probe` work on: the seed's recipe unless CONFIG says
# otherwise; its run folder is named after the config's `name` (or SET's `name=`).
CONFIG ?= configs/stl10-seed.toml
CONFIG_NAME = $(or $(patsubst name=%,%,$(filter name=%,$(SET))),$(shell sed -n 's/^name = "\(.*\)"/\1/p' $(CONFIG)))

train:
	if [ -d $(RUNS)/$(CONFIG_NAME)/checkpoints ]; then $(TRAIN_GPU) --resume $(RUNS)/$(CONFIG_NAME) --device $(DEVICE) $(SETS); \
	else $(TRAIN_GPU) --config $(CONFIG) --runs $(RUNS) --device $(DEVICE) $(SETS); fi

# Features for the pretrained and random-init encoders, linear probe, kNN, report.
probe:
	$(PROBE_GPU) all --run $(RUNS)/$(CONFIG_NAME) --device $(DEVICE)

# The seed's whole experiment on one GPU: both pre-trainings (each continued where it
# stopped), I-JEPA's linear probe by the seed's recipe and ours, the seed's fine-tuning of
# MAE and of the random-init encoder, then the seed's table beside the measured one with the
# wall time of every stage (also in $(SEED_OUT)/). A 50-epoch pre-training is a day or more.
# SEED_EPOCHS: the seed's evaluation epochs, 15 (its results table) or 50 (its hyper-parameters).
SEED_OUT ?= $(RUNS)/reproduce-seed
SEED_EPOCHS ?= 15
SEED_IJEPA = $(RUNS)/stl10-seed
SEED_MAE = $(RUNS)/stl10-mae-seed
reproduce-seed:
	@set -e; mkdir -p $(SEED_OUT); times=$(SEED_OUT)/times.tsv; : > $$times; \
	stage() { name=$$1; shift; started=$$(date +%s); "$$@"; \
	  printf '%s\t%s\n' "$$name" $$(( $$(date +%s) - started )) >> $$times; }; \
	$(BUILD_GPU); bin=$(TARGET_DIR)/release; \
	for config in configs/stl10-seed.toml configs/stl10-mae-seed.toml; do \
	  name=$$(sed -n 's/^name = "\(.*\)"/\1/p' $$config); \
	  if [ -d $(RUNS)/$$name/checkpoints ]; then \
	    stage "pre-training $$name" $$bin/train --resume $(RUNS)/$$name --device $(DEVICE) $(SETS); \
	  else stage "pre-training $$name" $$bin/train --config $$config --runs $(RUNS) --device $(DEVICE) $(SETS); fi; \
	done; \
	stage "features, I-JEPA's target encoder" \
	  $$bin/probe features --run $(SEED_IJEPA) --device $(DEVICE) --batch-size 256 --quiet; \
	stage "linear probe, seed's recipe" $$bin/probe linear --run $(SEED_IJEPA) --recipe seed --seed-epochs $(SEED_EPOCHS) --protocol stl10-5k --quiet; \
	stage "linear probe, ours" $$bin/probe linear --run $(SEED_IJEPA) --protocol stl10-5k --quiet; \
	stage "fine-tune MAE, seed's recipe" $$bin/probe finetune --run $(SEED_MAE) --recipe seed --seed-epochs $(SEED_EPOCHS) --device $(DEVICE) --quiet; \
	stage "fine-tune random init, seed's recipe" \
	  $$bin/probe finetune --run $(SEED_IJEPA) --encoder random --recipe seed --seed-epochs $(SEED_EPOCHS) \
	    --device $(DEVICE) --quiet; \
	$$bin/probe report --run $(SEED_IJEPA) --quiet > /dev/null; $$bin/probe report --run $(SEED_MAE) --quiet > /dev/null; \
	$$bin/probe seed-table --ijepa $(SEED_IJEPA) --mae $(SEED_MAE) --times $$times --out $(SEED_OUT)/table.md

probe-demo:
	$(PROBE_CPU) all --run $(RUNS)/demo-fashion --require-pretrained-better

# The whole path on the CPU; fails when pre-training did not beat a random encoder.
demo: train-demo
	$(MAKE) probe-demo

# Every method pre-trained with its own recipe for the same training budget on the same data
# (configs/compare-fashion-<method>.toml where one exists, else configs/compare-fashion.toml),
# then linear probe, kNN and fine-tuning of each, of the random-init encoder and (frozen only)
# of the raw pixels and I-JEPA's context encoder -> $(COMPARE)/summary.parquet, summary.png,
# compare.md, and the reconstruction figures of the methods that predict pixels. Finished runs
# are kept; the evaluation runs again.
COMPARE ?= $(RUNS)/compare-fashion
COMPARE_METHODS ?= ijepa ijepa-pixels mae
COMPARE_FINETUNE ?= --finetune-train-images 4000 --finetune-epochs 2 --finetune-learning-rates 3e-3,1e-3
compare: ingest-fashion
	@set -e; started=$$(date +%s); runs=; \
	for method in $(COMPARE_METHODS); do \
	  config=configs/compare-fashion-$$method.toml; [ -f $$config ] || config=configs/compare-fashion.toml; \
	  if [ -d $(COMPARE)/$$method/checkpoints ]; then $(TRAIN_CPU) --resume $(COMPARE)/$$method; \
	  else $(TRAIN_CPU) --config $$config --runs $(COMPARE) --set name=$$method --set method=$$method; fi; \
	  runs="$$runs --run $(COMPARE)/$$method"; \
	done; \
	$(PROBE_CPU) compare $$runs --out $(COMPARE) $(COMPARE_FINETUNE); \
	for method in ijepa-pixels mae; do \
	  $(PROBE_CPU) reconstruct --run $(COMPARE)/$$method --out $(COMPARE)/$$method-reconstruction.png; \
	done; \
	echo "compare: $$(( $$(date +%s) - started )) s wall"

# The recipe sweep: each line of SWEEP_PLAN is a run name, its config and the fields it sets
# (`key=value`, as `train --set` takes them). A run is trained unless its folder has
# checkpoints, then scored (features, linear probe, kNN) unless the table already has it;
# `probe sweep` prints each method's best recipe by validation accuracy.
SWEEP_PLAN ?= configs/sweep-fashion.txt
SWEEP ?= $(RUNS)/sweep
sweep: ingest-fashion
	@set -ef; started=$$(date +%s); \
	grep -v '^[[:space:]]*\(#\|$$\)' $(SWEEP_PLAN) | while read -r name config fields; do \
	  sets=; for field in $$fields; do sets="$$sets --set $$field"; done; \
	  if [ ! -d $(SWEEP)/$$name/checkpoints ]; then \
	    $(TRAIN_CPU) --config $$config --runs $(SWEEP) --quiet --set name=$$name $$sets; fi; \
	  $(PROBE_CPU) sweep --run $(SWEEP)/$$name --table $(SWEEP)/sweep.parquet --skip-scored --quiet; \
	done; \
	echo "sweep: $$(( $$(date +%s) - started )) s wall"

test: test-rust test-python check-docs

# The probe's end-to-end test leaves its small run in target/interop for test-python.
test-rust:
	rm -rf target/interop
	JEPA_INTEROP_DIR=$(CURDIR)/target/interop $(CARGO) test --workspace $(TEST_FEATURES)

# The GPU code path on Burn's wgpu backend, against the CPU: on a machine without a GPU, on
# Mesa's lavapipe (`make setup` installs it). Kernels are compiled on first use and kept beside
# the build, so a second run is quicker. XDG_RUNTIME_DIR only quiets a Vulkan warning.
test-wgpu:
	JEPA_KERNEL_CACHE=$(abspath $(TARGET_DIR))/kernel-cache XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-$$(mktemp -d)} $(CARGO) test --workspace $(TEST_FEATURES) --test wgpu -- --nocapture

# Real shards must open in Python as they are: the probe's end-to-end test ingests all of
# Fashion-MNIST into target/interop/probe-demo/fashion-mnist with the same code as `ingest`
# (whose command line has tests of its own), and every file is read with polars and pyarrow.
# Building the ingest binary alone here would resolve dependency features differently from
# the workspace test build and recompile much of it.
# Every fenced shell command in README.md and docs/ names a real target, subcommand and option,
# checked against the binaries of the test build (nothing new to compile after `make test-rust`).
check-docs:
	$(CARGO) test --workspace $(TEST_FEATURES) --no-run --quiet
	$(PYTHON) scripts/check_commands.py $(TARGET_DIR) --self-test
	$(PYTHON) scripts/check_commands.py $(TARGET_DIR)

test-python:
	$(PYTHON) scripts/check_shards.py target/interop/probe-demo/fashion-mnist
	$(PYTHON) scripts/check_probe.py target/interop/probe-demo/runs/demo-fashion
	$(PYTHON) scripts/check_compare.py target/interop/compare/compare-out

# The seed's STL-10 path at its real ViT-B/16 geometry on the CPU: an STL-10 archive cut from
# the photographs of Debian's mate-backgrounds, served over loopback with one cut connection,
# downloaded, ingested, pre-trained for 2 steps with configs/stl10-seed.toml and probed by
# every protocol, figure and report (probe/tests/stl10_smoke.rs; the same build as make test).
stl10-smoke:
	rm -rf target/stl10-smoke
	JEPA_SMOKE_DIR=$(CURDIR)/target/stl10-smoke $(CARGO) test --workspace $(TEST_FEATURES) --test stl10_smoke -- --nocapture

# What a careful user can do to a run folder (a second writer, a damaged checkpoint, …),
# each through the real binaries (trainer/tests/faults.rs; the same build as make test).
test-faults:
	$(CARGO) test --workspace $(TEST_FEATURES) --test faults

# An exported encoder must load strictly into timm and give the probe's features; an official
# I-JEPA checkpoint written by PyTorch must import and give timm's. The probe's end-to-end test
# runs scripts/check_interop.py when JEPA_INTEROP_PYTHON names a Python that can; the same
# workspace-wide build as test-rust, so nothing is compiled again.
interop-venv:
	test -x $(INTEROP_PYTHON) || python3 -m venv $(INTEROP_VENV)
	$(INTEROP_PYTHON) -c "import torch, timm, safetensors, pyarrow" 2>/dev/null || \
	  $(INTEROP_PYTHON) -m pip install -q torch timm safetensors pyarrow

test-interop: interop-venv
	JEPA_INTEROP_PYTHON=$(abspath $(INTEROP_PYTHON)) $(CARGO) test --workspace $(TEST_FEATURES) --test demo small_demo -- --nocapture

# The GPU build must keep compiling even where no GPU is: both binaries in one resolution, so
# their dependencies are checked once.
check-gpu:
	$(CARGO) check -p jepa-trainer -p jepa-probe --features $(GPU_FEATURES),jepa-trainer/nccl,jepa-trainer/mpi --bins

# Two MPI ranks against one process through the real binary; the loader's rank shares are
# tested by `make test` (shared/tests/loader.rs).
test-distributed:
	$(CARGO) test --workspace $(TEST_FEATURES) --test distributed

# images/s of the demo's step: one process, then world size 1 and 2 under mpirun (each rank
# on one core), on this machine's CPU.
BENCH_DP_STEPS ?= 40
BENCH_DP = --config configs/demo-fashion.toml --device cpu --quiet --set optim.max_steps=$(BENCH_DP_STEPS) --set checkpoint.every_steps=100000
MPIRUN = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none
bench-distributed: ingest-fashion
	$(CARGO) build --release --quiet -p jepa-trainer --bin train --features mpi
	@set -e; out=$$(mktemp -d); rate() { sed -n 's/.*, \([0-9.]*\) images\/s.*/\1/p'; }; \
	solo=$$($(TARGET_DIR)/release/train $(BENCH_DP) --runs $$out/solo | rate); \
	one=$$($(MPIRUN) -n 1 $(TARGET_DIR)/release/train $(BENCH_DP) --runs $$out/one | rate); \
	two=$$($(MPIRUN) -n 2 -x RAYON_NUM_THREADS=1 $(TARGET_DIR)/release/train $(BENCH_DP) --runs $$out/two | rate); \
	rm -rf $$out; \
	echo "demo I-JEPA step, $(BENCH_DP_STEPS) steps of 64 images, $$(nproc) cores:"; \
	echo "  one process                       $$solo images/s"; \
	echo "  mpirun -n 1                       $$one images/s"; \
	echo "  mpirun -n 2 (one thread per rank) $$two images/s"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) --test wgpu --test stl10_smoke --test faults --test distributed -- -D warnings

bench: bench-ingest bench-loader bench-train bench-probe

bench-ingest:
	FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) $(CARGO) bench -p jepa-ingest --bench ingest

bench-loader:
	FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) $(CARGO) bench -p jepa-shared --bench loader

# jepa-stream's step, then PyTorch eager's on the same case, threads and batch, and the ratio.
# (cargo runs benches in the package's folder: the paths are made absolute.)
bench-train: $(BENCH_VENV)/.torch
	BENCH_TORCH_PYTHON=$(abspath $(BENCH_VENV))/bin/python BENCH_TORCH_REFERENCE=$(abspath $(TORCH_REFERENCE)) \
	  $(CARGO) bench -p jepa-trainer --bench train

$(BENCH_VENV)/.torch:
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q torch numpy
	touch $@

bench-probe:
	$(CARGO) bench -p jepa-probe --bench features

# The CUDA `train` for a lent GPU machine, built and packed into .gpu/ by the kit, which
# expects its build under ./target.
bench-gpu:
	CARGO_TARGET_DIR=$(CURDIR)/target bash $(GPU_KIT)/prepare.sh
	@echo "On the GPU machine, from a copy of this folder with .gpu/ beside it: bash .gpu/device.sh"
	@echo "(see $(GPU_KIT)/README.md; it prints images/s, GPU memory and PyTorch's f32 and bf16 figures)"

clean:
	rm -rf target/interop
