# The README's two commands. Each sets itself up on a fresh machine: a .venv with everything installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: demo test install system-deps clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	@echo ">>> creating $(VENV) and installing requirements (a few minutes on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# Under CI=true the test suite's Debian packages are installed when missing (see .ci/install_system_deps.sh).
system-deps:
	@if [ "$$CI" = "true" ]; then bash .ci/install_system_deps.sh; fi

demo: install
	@echo ">>> demo: shapes data, the segmentation-aware captioner (trained once, about 10 minutes), its evaluation and the web page"
	$(PY) scripts/demo.py --out $(DEMO_DIR)

test: install system-deps
	@echo ">>> running the test suite"
	$(PY) -m pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache *.egg-info
