# Two commands on a fresh machine:  make demo  (set up + main job)   make test  (set up + tests)
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch; a looser pin pulls a multi-GB CUDA build (the package itself needs torch>=2.4).
TORCH  ?= torch==2.13.0
DEMO_ARGS ?=

.PHONY: setup system-deps demo test test-fast lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,music,media,compress,fast]"
	touch $@

# Debian tools used by the music and media tasks (abc2midi, espeak-ng) and by the test that
# renders a `bgpt inspect` page in a real browser (chromium, headless).
system-deps:
	@if command -v abc2midi >/dev/null && command -v espeak-ng >/dev/null && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq abcmidi espeak-ng chromium >/dev/null; \
	else echo "note: install abcmidi, espeak-ng and chromium (e.g. sudo apt-get install abcmidi espeak-ng chromium) for the music and media tasks and the browser test"; fi

demo: setup
	$(BIN)/bgpt demo $(DEMO_ARGS)

test: setup system-deps
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check bgpt tests benchmarks experiments
	$(BIN)/ruff format --check bgpt tests benchmarks experiments

clean:
	rm -rf $(VENV) .pytest_cache
