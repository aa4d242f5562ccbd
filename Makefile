# plumb — top-level entry points. `make run` and `make test` work on a fresh Debian machine:
# each target first installs the Debian packages it needs (scripts/setup.sh): `make` only the
# build's, `make model` what downloading needs, `make fuzz` clang too, `make test` all of
# these and the test tools (.venv, chromium, man-db).
BUILD      ?= build
SAN_BUILD  ?= build-san
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
PY         := .venv/bin/python
MODEL      := models/gemma-3-270m-q4_k_m.gguf
FUZZ_SECONDS ?= 30
# make install / uninstall: the installation prefix, and a staging root put in front of it
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all setup setup-model setup-fuzz setup-test build sanitize fuzz fuzz-smoke model run bench \
        test unit-test e2e-test install uninstall clean

all: build

setup:
	@bash scripts/setup.sh build

setup-model:
	@bash scripts/setup.sh model

setup-fuzz:
	@bash scripts/setup.sh build fuzz

# everything make test uses, in one apt-get run
setup-test:
	@bash scripts/setup.sh build fuzz model test

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

sanitize: setup
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLUMB_SANITIZE=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS)

fuzz: setup-fuzz
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLUMB_SANITIZE=ON -DPLUMB_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_gguf fuzz_vocab fuzz_request fuzz_model fuzz_template fuzz_schema fuzz_grammar fuzz_manifest fuzz_rpc_wire fuzz_rpc_graph fuzz_rpc_server fuzz_imatrix

# Bounded libFuzzer runs of the GGUF reader, of the vocabulary loader + tokenizers, of the
# server's request parsing (the whole HTTP request), of model loading (+ one decode), of Jinja
# chat templates, of the JSON Schema converter, of GBNF grammars (parser and matcher) and of OCI
# references, manifests and model configs, of the remote protocol's handshake and frames, of
# its COMPUTE graph decoder (each accepted graph is run), of a server connection's requests and of
# plumb quantize's importance matrices, from
# the committed seed corpora (fuzz/corpus-<name> when there is one, else
# fuzz/corpus). A crash fails the target (libFuzzer exits non-zero).
fuzz-smoke: fuzz
	@for h in gguf vocab request model template schema grammar manifest rpc_wire rpc_graph rpc_server imatrix; do \
	    seeds=fuzz/corpus-$$h; [ -d $$seeds ] || seeds=fuzz/corpus; \
	    rm -rf fuzz/corpus-work/$$h && mkdir -p fuzz/corpus-work/$$h && \
	    $(FUZZ_BUILD)/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=5 -rss_limit_mb=2048 \
	        -print_final_stats=1 fuzz/corpus-work/$$h $$seeds > fuzz/corpus-work/$$h.log 2>&1 || \
	        { tail -n 40 fuzz/corpus-work/$$h.log; echo "fuzz-smoke: fuzz_$$h found a crash"; exit 1; }; \
	    grep -E "Done [0-9]+ runs" fuzz/corpus-work/$$h.log; \
	    echo "fuzz-smoke: fuzz_$$h ran $(FUZZ_SECONDS) s without a crash"; \
	done

model: setup-model
	@bash scripts/get-model.sh

PROMPT ?= The three most useful things to know about the ocean are
N ?= 96

# Set up, build, fetch the default model and generate a short text with it.
run: build model
	@$(BUILD)/plumb run -m $(MODEL) -p "$(PROMPT)" -n $(N) --temp 0.7 --seed 42

# Prompt and generation speed of the default model against the memory roofline
# (BENCH_ARGS adds options, e.g. BENCH_ARGS="-t 2 -r 3"). bench/compare.sh runs llama.cpp beside it.
BENCH_ARGS ?=
bench: build model
	@$(BUILD)/plumb bench -m $(MODEL) $(BENCH_ARGS)

# The OpenCL conformance tests run on any OpenCL device there is (make test installs PoCL,
# and then requires it); LeakSanitizer is told of the driver stack's own leaks only.
REQUIRE_OPENCL ?= 0
SAN_ENV = LSAN_OPTIONS=suppressions=$(CURDIR)/tests/unit/lsan_opencl.supp:use_tls=0
unit-test: build sanitize
	@echo "== unit tests (release)" && PLUMB_REQUIRE_OPENCL=$(REQUIRE_OPENCL) $(BUILD)/plumb_unit_tests
	@echo "== unit tests (ASan+UBSan)" && PLUMB_REQUIRE_OPENCL=$(REQUIRE_OPENCL) $(SAN_ENV) $(SAN_BUILD)/plumb_unit_tests

e2e-test: setup-test build sanitize
	@echo "== end-to-end tests (pytest)"
	@PLUMB_BUILD=$(BUILD) PLUMB_BIN=$(BUILD)/plumb PLUMB_SAN_BIN=$(SAN_BUILD)/plumb PLUMB_LIB=$(BUILD)/libplumb.so \
	    $(PY) -m pytest -q tests/e2e

# Ends by repeating which CPU kernel sets the unit tests checked on this machine and which
# they could not (the kernel tests, run again: about a second).
test: REQUIRE_OPENCL := 1
test: setup-test unit-test e2e-test fuzz-smoke
	@$(BUILD)/plumb_unit_tests --kernel-sets

# Installs the command, libplumb.so.0 (+ the libplumb.so link), libplumb.a, plumb.h, plumb.pc
# and the plumb(1) man page under $(DESTDIR)$(PREFIX), with CMake's install rules.
install: build
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

# Removes exactly the files make install puts under $(DESTDIR)$(PREFIX): the list comes from
# installing into a scratch directory with the same prefix (directories are left in place).
uninstall:
	@[ -f $(BUILD)/cmake_install.cmake ] || { echo "uninstall: $(BUILD) is not built (make build)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	DESTDIR="$$tmp/root" cmake --install $(BUILD) --prefix "$(PREFIX)" >/dev/null && \
	(cd "$$tmp/root" && find . ! -type d | sed 's|^\.||' | sort) > "$$tmp/files" && \
	while IFS= read -r f; do \
	    if [ -e "$(DESTDIR)$$f" ] || [ -L "$(DESTDIR)$$f" ]; then \
	        echo "-- Removing: $(DESTDIR)$$f" && rm -f "$(DESTDIR)$$f" || exit 1; \
	    fi; \
	done < "$$tmp/files"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD) fuzz/corpus-work
