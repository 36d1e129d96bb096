# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# ../shared/data beside the checkout; in a git worktree, beside the main checkout it belongs to
GIT_COMMON := $(shell git rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
export TELESCOPE_DATA ?= $(if $(GIT_COMMON),$(abspath $(dir $(GIT_COMMON))../shared/data),$(abspath ../shared/data))

.PHONY: demo test venv bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the release on this disk, so that the project's own
# range (torch>=2.3) is already met and pip fetches no other build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,ray,tensorboard]"
	touch $(STAMP)

venv: $(STAMP)

# one demo process: torch may use every core it is given, said explicitly (as `make test`
# pins one per process); override with `make demo DEMO_THREADS=n`
DEMO_THREADS ?= $(shell nproc 2>/dev/null || echo 1)

demo: $(STAMP)
	OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS) $(VENV)/bin/telescope demo

# one torch thread per test process: the suite's models are small, and on a shared
# machine two threads per process oversubscribe the cores
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/lens_overhead.py

clean:
	rm -rf $(VENV) runs
