# Pipewell: set-up, service, tests. Every target is safe to run again:
# `make setup` only does what is missing or out of date.
#
#   make setup   venv + Docker daemon + system packages + images
#   make dev     run the service on http://127.0.0.1:1234 (ARGS=... passed on)
#   make test    set up, then pytest (PYTEST_ARGS=... passed on)
#   make bench   benchmarks (ARGS=... passed on)
#   make lint    ruff check

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
DATA_DIR := $(or $(PIPEWELL_DATA_DIR),.pipewell)
HOST ?= 127.0.0.1
PORT ?= 1234
ARGS ?=
# Passed to pytest as they are; pytest's testpaths (tests, nodes) by default.
PYTEST_ARGS ?=

# The scripts read the data directory from here; the tests do not see it.
SCRIPT_ENV := PIPEWELL_DATA_DIR=$(DATA_DIR)

.PHONY: help setup venv docker packages images dev test bench lint
# The set-up steps share apt/dpkg locks: one at a time even under make -j.
.NOTPARALLEL:

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

setup: venv docker packages images

venv:
	@$(SCRIPT_ENV) scripts/ensure-venv.sh

docker:
	@$(SCRIPT_ENV) scripts/ensure-docker.sh

# Installed, not started: the tests start their own redis-server. Chromium is the
# real browser the tests drive (through Playwright) to act as a web page would. jq
# is in the commands the README and the web UI give users; the tests paste them.
packages:
	@$(SCRIPT_ENV) bash -c '. scripts/lib.sh && apt_install redis-server chromium jq'

images: venv docker
	@$(SCRIPT_ENV) scripts/build-images.sh

dev: setup
	$(VENV)/bin/pipewell dev --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) $(ARGS)

test: setup
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: setup
	@if [ -f bench/__main__.py ]; then \
		$(VENV)/bin/python -m bench $(ARGS); \
	else \
		echo "bench: not written yet (bench/__main__.py is missing)"; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
