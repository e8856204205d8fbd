# facerecon developer entry points. `make demo` and `make test` are all a newcomer needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_ASSETS := $(abspath ../shared/assets)
ifneq ($(wildcard $(SHARED_ASSETS)),)
export FACERECON_ASSETS ?= $(SHARED_ASSETS)
endif
EXTRAS ?= dev,detect,onnx,batch

.PHONY: setup demo test test-slow lint bench clean

$(BIN)/facerecon: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(BIN)/facerecon

demo: setup
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
