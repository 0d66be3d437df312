# The README's two commands: `make demo` and `make test`. Both set up what they need and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xai-installed
DATA_PACKAGES := mricron-data invesalius-examples insighttoolkit5-examples
# libEGL / libOpenGL let slicer-core's VTK render slice and 3D views offscreen for the bridge tests.
GL_PACKAGES := libegl1 libopengl0 libgl1 libglx-mesa0 libegl-mesa0
# Debian's Chromium: the comparison report's test opens the page in a real headless browser (driven by playwright,
# whose own browser download needs the network).
BROWSER_PACKAGES := chromium
export OMP_NUM_THREADS ?= 2

.PHONY: demo test setup data benchmark cmake-lists screenshots clean-venv

demo: setup data
	$(PY) -m XAIExplainerLib.extras.demo --output demo_output

test: setup data
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(PY) -m pytest Testing -q

benchmark: setup
	$(PY) -m XAIExplainerLib.cli benchmark --profile cpu --quick

setup: $(STAMP)

# torch==2.13.0 is installed before anything that depends on torch: a bare `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps grad-cam==1.5.7  # no deps: see the test extra in pyproject.toml
	@touch $(STAMP)

data:
	@missing=""; for p in $(DATA_PACKAGES) $(GL_PACKAGES) $(BROWSER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Missing Debian packages:$$missing. Install them with: sudo apt-get install$$missing"; exit 1; fi; \
	fi

cmake-lists: setup
	$(PY) Testing/update_cmake_lists.py

screenshots: setup data
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(PY) Testing/make_screenshots.py

clean-venv:
	rm -rf $(VENV)
