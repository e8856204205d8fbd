# facerecon developer entry points. `make demo` and `make test` are all a newcomer needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_ASSETS := $(abspath ../shared/assets)
ifneq ($(wildcard $(SHARED_ASSETS)),)
export FACERECON_ASSETS ?= $(SHARED_ASSETS)
endif
EXTRAS ?= dev,detect,onnx,serve,serve-test,video,batch
# The reference for FaceMesh tests (legacy mp.solutions API); its wheel also carries the
# "mediapipe-facemesh" weights, found by the asset search. Empty to skip.
MEDIAPIPE_REF ?= mediapipe==0.10.21
# What `make demo` needs; `assets fetch` leaves assets that are already present alone.
DEMO_ASSETS ?= ict-facekit 3ddfa-v2 bfm-metadata mediapipe-facemesh

.PHONY: setup demo test test-slow lint bench clean

# The package asks only torch>=2.1; installing torch==2.13.0 first makes pip take the CPU wheel on this
# machine's disk (PyPI's default Linux torch is the multi-GB CUDA build).
$(BIN)/facerecon: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	# One resolve with the reference mediapipe: it pins protobuf<5, and onnx must be chosen to match.
	$(BIN)/pip install -q -e ".[$(EXTRAS)]" $(if $(MEDIAPIPE_REF),"$(MEDIAPIPE_REF)")
	touch $@

setup: $(BIN)/facerecon

demo: setup
	$(BIN)/facerecon assets fetch $(DEMO_ASSETS)
	$(BIN)/facerecon assets list --no-hash
	$(BIN)/facerecon demo -o out/demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) out build *.egg-info
