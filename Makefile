# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV := .venv
STAMP := $(VENV)/.setup-done

.PHONY: setup browser demo test test-fast lint lock

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

browser:
	bash scripts/setup-browser.sh

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/aw-demo

lint: setup
	bash scripts/lint.sh

# scripts/test.sh empties every cache outside the clone first (ARTIFACTWORLD_CACHE, HF_HOME, TORCH_HOME, XDG_*).
test: setup browser lint
	bash scripts/test.sh tests

test-fast: setup
	bash scripts/test.sh tests -m "not slow"

lock:
	uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header requirements.in -o requirements.lock
