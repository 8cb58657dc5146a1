# Each target sets itself up: a local .venv with bleedjax and its test tools installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint clean

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/bleedjax demo --out demo_out

# Two pytest workers: the suite is mostly XLA compilation, which is single-threaded. Work
# stealing keeps both busy to the end, where a few 20-30 s tests would otherwise run one after
# another on one worker (a fresh clone on the 2-core machine, cold compile cache: 522 s with the
# default scheduling, 479 s with worksteal, one run each, 2026-12-06).
test: $(INSTALLED)
	JAX_PLATFORMS=cpu $(VENV)/bin/python -m pytest -n 2 --dist worksteal

lint: $(INSTALLED)
	$(VENV)/bin/python -m pip install --quiet ruff
	$(VENV)/bin/ruff check bleedjax tests benchmarks scripts configs

clean:
	rm -rf demo_out .pytest_cache
