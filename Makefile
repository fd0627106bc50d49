# Elpis front door. `make` builds into build/ (the command is build/elpis),
# `make run` installs what is missing and runs the main job, `make test` runs
# every test: release build, ASan+UBSan build, and a short fuzz run.
SHARED   ?= $(abspath ../shared)
MODEL    ?= $(if $(ELPIS_MODEL),$(ELPIS_MODEL),$(SHARED)/models/stories260K.gguf)
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 20
CMAKE_Q  = cmake -S . -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -Wno-dev

.PHONY: all build deps run demo test test-release test-asan test-tsan fuzz clean

all: build

deps:
	@bash scripts/install-deps.sh

build:
	@$(CMAKE_Q) -B build >/dev/null
	@cmake --build build -j $(JOBS)

# The main job: serve the default model (Ctrl+C stops it; it drains first).
run: deps build
	./build/elpis serve -m "$(MODEL)" --ctx 2048 --data-dir "$(CURDIR)/data" --log-file "$(CURDIR)/logs/system.log"

demo: deps build
	./build/elpis run -m "$(MODEL)" -p "Once upon a time" -n 200 --temp 0

test: deps
	@bash scripts/test-all.sh

test-release: build
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan:
	@$(CMAKE_Q) -B build-asan -DCMAKE_BUILD_TYPE=Debug -DELPIS_SANITIZE=address,undefined \
	  -DCMAKE_C_COMPILER=clang >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer: the tests that run more than one thread (scheduler, pool, server).
test-tsan:
	@$(CMAKE_Q) -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DELPIS_SANITIZE=thread \
	  -DCMAKE_C_COMPILER=clang >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  ctest --output-on-failure -j $(JOBS) -R 'test_sched|test_forward|test_tokenizer|test_mcp_server|server_(api|stream|node)'

fuzz:
	@$(CMAKE_Q) -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DELPIS_SANITIZE=address,undefined \
	  -DELPIS_FUZZ=ON -DCMAKE_C_COMPILER=clang >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@bash scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf build build-asan build-tsan build-fuzz
