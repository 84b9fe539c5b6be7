# irisflow: `make run` and `make test` do all set-up on a fresh machine (a venv under .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATE ?=

.PHONY: run test serve bench tools clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

## run: the pipeline for today (or DATE=YYYY-MM-DD) on the embedded defaults
run: $(VENV)/.runtime
	$(PY) -m service run $(if $(DATE),--date $(DATE))

## serve: the daemon in the foreground on the embedded defaults
serve: $(VENV)/.runtime
	$(PY) -m service serve

## tools: the real tools the deploy tests check files with, from Debian's packages when missing:
## promtool and prometheus (prometheus), systemd-analyze (systemd), shellcheck (shellcheck), the headless
## browser of the partition view's test (chromium), and for the boot test (tests/test_systemd_boot.py)
## systemd-nspawn (systemd-container) and debootstrap (debootstrap)
tools:
	@missing=$$(for pair in promtool:prometheus prometheus:prometheus systemd-analyze:systemd shellcheck:shellcheck \
	    chromium:chromium systemd-nspawn:systemd-container debootstrap:debootstrap; do \
	    command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## test: the whole suite
test: $(VENV)/.dev tools
	$(PY) -m pytest

## bench: the benchmark; prints one figure a line with its goal
bench: $(VENV)/.runtime
	$(PY) -m bench

clean:
	rm -rf $(VENV) output state
