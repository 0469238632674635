# Two entry points do all set-up on a fresh Debian 12 machine (root, no Docker Hub, no Galaxy):
#   make demo   one throwaway systemd container "dhis-celery-demo" running the whole stack
#   make test   lint, controller-side tests and every Molecule scenario
# Both reuse what an earlier run built (.venv, the Docker engine, the local images).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SUITES := bookworm trixie
SCENARIOS := $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))

.PHONY: all setup venv docker images promtool lint unit test molecule demo demo-clean reliability bench security-report test-timings clean help

help:
	@echo "make demo | make test | make lint | make molecule SCENARIO=name | make demo-clean"

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

docker:
	bash scripts/ensure-docker.sh

images: docker
	@for suite in $(SUITES); do bash scripts/build-image.sh $$suite; done

setup: venv images

lint: venv promtool
	yamllint -s .
	ansible-lint -q
	ruff check .
	ruff format --check .
	promtool check rules monitoring/prometheus/alerts.yml
	promtool test rules monitoring/prometheus/alerts_test.yml

# promtool comes with Debian's prometheus package (its service is not started here).
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

unit: venv promtool
	pytest -q tests

molecule: setup
	@set -e; for scenario in $(or $(SCENARIO),$(SCENARIOS)); do \
	  echo "== molecule test -s $$scenario"; start=$$(date +%s); \
	  molecule test -s $$scenario; \
	  echo "== $$scenario took $$(( $$(date +%s) - start )) s"; \
	done

# Prints `== STEP took N s` for each step and the whole; `make test 2>&1 | tee .cache/make-test.log`
# then `make test-timings` writes the README's timings from that log (docs/test-timings.json).
test: venv
	@set -e; start=$$(date +%s); \
	for step in lint unit molecule; do \
	  step_start=$$(date +%s); $(MAKE) --no-print-directory $$step || { echo "== $$step failed"; exit 1; }; \
	  [ $$step = molecule ] || echo "== $$step took $$(( $$(date +%s) - step_start )) s"; \
	done; \
	echo "== make test took $$(( $$(date +%s) - start )) s"

test-timings: venv
	$(BIN)/python scripts/report_test_timings.py .cache/make-test.log

demo: setup
	bash scripts/demo.sh

# Not part of `make test` (which runs the short form): the full fault suite and its report.
reliability: setup
	bash scripts/reliability.sh $(RELIABILITY_PARTS)

# Not part of `make test`: converge time and throughput against the guide's own setup, on two
# fresh containers; rewrites the measured part of docs/PERFORMANCE.md and docs/performance.png.
$(VENV)/.bench: requirements-bench.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@

bench: setup $(VENV)/.bench
	$(BIN)/python scripts/bench/bench.py $(BENCH_ARGS)

# Not part of `make test`: exposure scores of the role's units and the guide's on the demo host;
# writes docs/security-report.json and the generated part of docs/SECURITY.md.
security-report: demo
	$(BIN)/python scripts/security_report.py

demo-clean:
	-docker rm -f dhis-celery-demo

clean: demo-clean
	-for scenario in $(SCENARIOS); do molecule destroy -s $$scenario; done
