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

# Two pytest workers: the suite is mostly XLA compilation, which is single-threaded, so a
# 2-core machine runs it in about 380 s instead of 480 s.
test: $(INSTALLED)
	JAX_PLATFORMS=cpu $(VENV)/bin/python -m pytest -n 2

lint: $(INSTALLED)
	$(VENV)/bin/python -m pip install --quiet ruff
	$(VENV)/bin/ruff check bleedjax tests benchmarks scripts configs

clean:
	rm -rf demo_out .pytest_cache
