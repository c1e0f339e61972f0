# The two front-door commands: `make demo` and `make test`.
# Both create .venv when it is missing and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint dist matrix bench docs-images clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# The stamp files re-install when pyproject.toml changes.
$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[all]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[test]"
	touch $@ $(VENV)/.demo-installed

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.test-installed
	$(PIP) install -e ".[bench]"
	touch $@

## Open napari with a sample image and the k-means widget docked.
demo: $(VENV)/.demo-installed
	$(PY) -m napari_kmeans._napari.demo

## Run the whole test suite headless (under Xvfb when there is no display).
test: $(VENV)/.test-installed
	@command -v xvfb-run >/dev/null || { echo "xvfb-run not found: apt-get install xvfb xauth (or run bash .ci/run)"; exit 1; }
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) -m pytest $(PYTEST_ARGS)

## Lint and formatting (ruff; also the Python blocks of the Markdown pages).
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Build the sdist and the wheel into dist/ and check them (twine; manifest, icon and entry point
## inside the wheel; no test, venv or cache files).
dist: $(VENV)/.test-installed
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PY) tests/test_packaging.py dist

## The napari tests on the wheel of `make dist`, in fresh venvs under /tmp: napari's declared
## minimum with PyQt5 and the latest napari with PySide6 (what CI runs after `make test`).
matrix: dist
	bash .ci/matrix dist/napari_kmeans-*.whl $(MATRIX)

## Engine benchmarks against scikit-learn, OpenCV and scikit-image; writes docs/performance.md.
bench: $(VENV)/.bench-installed
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_quality.py
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) benchmarks/bench_preview.py

## Re-render the screenshots in docs/images from a real viewer.
docs-images: $(VENV)/.test-installed
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) docs/render_screenshots.py
	$(PY) docs/render_icon.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache .hypothesis
