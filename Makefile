# jepa-stream front door. `make help` lists the targets.

CARGO ?= cargo
DATASETS ?= datasets
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
# Point at an existing stl10_binary/ folder to skip the download.
STL10_DIR ?=
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

INGEST_RELEASE = $(CARGO) run --release --quiet -p jepa-ingest --bin ingest --
INGEST_DEV = $(CARGO) run --quiet -p jepa-ingest --bin ingest --

.PHONY: help setup ingest ingest-fashion masks test test-rust test-python lint bench bench-ingest bench-loader clean

help:
	@echo "make setup           Debian's Fashion-MNIST package and a Python venv with polars + pyarrow"
	@echo "make ingest-fashion  Fashion-MNIST IDX -> $(DATASETS)/fashion-mnist (Parquet shards + manifest)"
	@echo "make ingest          STL-10 -> $(DATASETS)/stl10 (downloads unless STL10_DIR=... is given)"
	@echo "make masks           runs/masks.png: I-JEPA's context and target blocks over real images"
	@echo "make test            all Rust tests, then the Python polars/pyarrow check of real shards"
	@echo "make lint            rustfmt and clippy"
	@echo "make bench-ingest    ingest throughput against a plain copy on the same disk"
	@echo "make bench-loader    prefetcher images/s (STL-10 and Fashion-MNIST recipes) against a plain copy"

setup:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist python3-venv
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q polars pyarrow

ingest:
ifneq ($(strip $(STL10_DIR)),)
	$(INGEST_RELEASE) stl10 --from $(STL10_DIR) --out $(DATASETS)/stl10
else
	$(INGEST_RELEASE) stl10 --download --out $(DATASETS)/stl10
endif

ingest-fashion:
	$(INGEST_RELEASE) fashion-mnist --from $(FASHION_MNIST_DIR) --out $(DATASETS)/fashion-mnist

# The multi-block masks over real images, as in the paper's figure.
MASKS_DATASET ?= $(DATASETS)/fashion-mnist
masks: $(if $(filter $(MASKS_DATASET),$(DATASETS)/fashion-mnist),ingest-fashion)
	$(CARGO) run --release --quiet -p jepa-shared --example mask_figure -- $(MASKS_DATASET) runs/masks.png test 4

test: test-rust test-python

test-rust:
	$(CARGO) test --workspace

# Real shards must open in Python as they are: ingest Fashion-MNIST with the dev build
# (dependencies are optimised in it) and read every file with polars and pyarrow.
test-python:
	rm -rf target/interop
	$(INGEST_DEV) fashion-mnist --from $(FASHION_MNIST_DIR) --out target/interop/fashion-mnist --quiet
	$(PYTHON) scripts/check_shards.py target/interop/fashion-mnist

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: bench-ingest bench-loader

bench-ingest:
	FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) $(CARGO) bench -p jepa-ingest --bench ingest

bench-loader:
	FASHION_MNIST_DIR=$(FASHION_MNIST_DIR) $(CARGO) bench -p jepa-trainer --bench loader

clean:
	rm -rf target/interop
