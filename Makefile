# The two commands: `make demo` and `make test`. Each installs what is missing, builds, runs.
# PY: the interpreter whose torch we build against (default: the project .venv, made by setup).
SHELL := /bin/bash
PY ?= .venv/bin/python
BUILD ?= build
JOBS ?= $(shell nproc)
SETUP ?= scripts/setup_env.sh
CMAKE_GENERATOR ?= $(if $(shell command -v ninja),Ninja,Unix Makefiles)
# An interpreter given by name (PY=python3, on a machine without the venv) is looked up on PATH.
PY_PATH = $(if $(findstring /,$(PY)),$(abspath $(PY)),$(shell command -v $(PY)))

.PHONY: all setup configure build python test sanitize gpu-check gpu-carry demo demo-picture format clean

all: build

setup:
	@$(SETUP)

configure: setup
	@cmake -S . -B $(BUILD) -G "$(CMAKE_GENERATOR)" -DPython_EXECUTABLE=$(PY_PATH) \
	  -DSTEADYSTEP_BUILD_TESTS=ON -DSTEADYSTEP_BUILD_PYTHON=ON > $(BUILD).configure.log \
	  || { cat $(BUILD).configure.log; exit 1; }
	@grep -E "steadystep:|CUDA compiler identification" $(BUILD).configure.log || true

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The Python package, editable, from the same build (setup.py drives CMake; nothing recompiles).
python: build
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e .

test: python
	PY=$(PY) BUILD=$(BUILD) scripts/run_tests.sh

# The C++ library, GoogleTest suite and examples with AddressSanitizer + UndefinedBehaviorSanitizer
# (cmake/sanitize.cmake), CPU only, in build-sanitize/: the "sanitize" presets of CMakePresets.json
# (flags, the sanitizer options, and the tests labelled no_sanitize it leaves out, with why).
# ctest fails on any finding.
sanitize: setup
	@cmake --preset sanitize -DPython_EXECUTABLE=$(PY_PATH) > build-sanitize.configure.log \
	  || { cat build-sanitize.configure.log; exit 1; }
	@grep -E "steadystep:" build-sanitize.configure.log || true
	cmake --build --preset sanitize -j $(JOBS)
	ctest --preset sanitize -j $(JOBS)

# The whole CUDA story on a machine with an NVIDIA GPU (scripts/gpu_check.sh, docs/BUILDING.md):
# build for TORCH_CUDA_ARCH_LIST, every GoogleTest and pytest case with no skip for want of CUDA,
# compute-sanitizer's four tools over every CUDA path, the benchmarks; logs under GPU_CHECK_LOGS
# ($OUT on the lent GPU machines), a summary table last. STAGES="build ctest" runs a part. The
# interpreter is the project .venv's where there is one, else python3 (the GPU machines' own).
GPU_PY = $(if $(filter command line environment,$(origin PY)),$(PY),$(if $(wildcard .venv/bin/python),.venv/bin/python,python3))
gpu-check:
	PY=$(GPU_PY) BUILD=$(BUILD) JOBS=$(JOBS) $(if $(GPU_CHECK_LOGS),LOGS=$(GPU_CHECK_LOGS)) scripts/gpu_check.sh

# What the lent GPU machines lack, gathered here (git-ignored) for the device tool to carry:
# GoogleTest's sources (gtest-src/) and the test-only reference wheels of requirements-dev.txt
# that their image does not hold (.whl/; pure Python, for its python3.12).
gpu-carry:
	rm -rf gtest-src && cp -r /usr/src/googletest gtest-src
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp -d .whl $$(grep -E '^(zclip|autoclip)==' requirements-dev.txt)

# The main demo: exploding gradients (inf records: three ways) and finite spikes (no clipping,
# max_grad_norm, ZScoreClip, SpikeSkip) side by side (see examples/cpp/exploding_gradients.cpp).
# DEMO_ARGS are passed on (e.g. DEMO_ARGS="--device cuda --steps 1000"). It writes under
# DEMO_OUT (git-ignored) only: a clone stays clean after its first demo.
DEMO_OUT ?= demo_out
demo: build
	$(BUILD)/examples/cpp/exploding_gradients --out $(DEMO_OUT) $(DEMO_ARGS)
	$(PY) examples/python/plot_demo.py $(DEMO_OUT)/metrics.csv $(DEMO_OUT)/training.png

# Refreshes the README's picture (tracked) from a default demo run: for maintainers, on purpose.
demo-picture: demo
	cp $(DEMO_OUT)/training.png docs/demo_training.png

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD) $(BUILD).configure.log build-sanitize build-sanitize.configure.log python/steadystep/_C*.so python/steadystep/libsteadystep.so*
