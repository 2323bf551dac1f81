# The README's two commands. Each does its own set-up on a fresh machine: a local virtual
# environment with the CPU build of torch 2.13.0 installed FIRST (so nothing pulls CUDA wheels),
# then this project and its extras. torchvision / timm / open-clip are never installed; the
# set-up fails if anything brought them in.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROMPT ?= a red cube
ARGS ?=

.PHONY: setup demo test test-slow bench clean-venv gltf-validator

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,sweep]'
	$(PY) scripts/check_env.py
	$(PY) scripts/build_kernels.py
	touch $@

setup: $(VENV)/.installed

# 1. The toy-world text-to-3D demo: train, turntable video, textured mesh, scores vs. the truth.
demo: setup
	$(PY) launch.py --config-name dreamfusion-toy system.prompt="$(PROMPT)" $(ARGS)

# 2. The test suite (fast tests; `make test-slow` runs the long ones).
test: setup
	$(PY) -m pytest -q -n 2 $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

bench: setup
	$(PY) benchmarks/dreamfusion_toy.py
	$(PY) benchmarks/hash_grid.py
	$(PY) benchmarks/toy_exemplars.py
	$(PY) benchmarks/export.py

# The Khronos glTF-Validator (npm) for the GLB tests, into the git-ignored .node/; without Node the tests skip.
GLTF_VALIDATOR_VERSION := 2.0.0-dev.3.10
GLTF_VALIDATOR_STAMP := .node/.installed-$(GLTF_VALIDATOR_VERSION)

$(GLTF_VALIDATOR_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix .node --no-save --no-package-lock --no-audit --no-fund -q gltf-validator@$(GLTF_VALIDATOR_VERSION) \
	  && touch $@ || echo "npm could not install gltf-validator: the glTF-Validator tests will skip"; \
	else echo "no npm on this machine: the glTF-Validator tests will skip"; fi

gltf-validator: $(GLTF_VALIDATOR_STAMP)

clean-venv:
	rm -rf $(VENV)
