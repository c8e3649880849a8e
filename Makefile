# The two commands a newcomer types: `make run` and `make test`.
# Both install what is missing (ffmpeg from apt, a virtualenv in .venv with
# streamproxy and its dependencies; for the tests also Chromium and the real
# tuner and guide clients), then run.

VENV ?= .venv
PYTHON ?= python3
CONFIG ?= config.yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test unit ffmpeg chromium clients bench

run: ffmpeg $(VENV)/.installed
	$(VENV)/bin/twistd -n streamproxy --config $(CONFIG)

test: ffmpeg chromium clients $(VENV)/.test-installed
	$(VENV)/bin/python -m twisted.trial tests

# The unit tests only: no real ffmpeg, browser or daemon process; seconds.
UNIT_TESTS = $(filter-out %_e2e test_daemon test_browser test_upstream,$(basename $(notdir $(wildcard tests/test_*.py))))
unit: $(VENV)/.test-installed
	$(VENV)/bin/python -m twisted.trial $(addprefix tests.,$(UNIT_TESTS))

bench: ffmpeg $(VENV)/.installed
	for script in bench/*.py; do $(VENV)/bin/python $$script || exit 1; done

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg; }

# The browser tests drive Debian's Chromium (never a downloaded build).
chromium:
	@test -x /usr/bin/chromium || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The real clients the tests run: SiliconDust's hdhomerun_config
# (hdhomerun-config) and tv_validate_file (xmltv-util), from Debian.
clients:
	@test -x /usr/bin/hdhomerun_config && test -x /usr/bin/tv_validate_file || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq hdhomerun-config xmltv-util; }

$(VENV)/.installed: setup.cfg pyproject.toml $(wildcard streamproxy/*.py streamproxy/static/*) twisted/plugins/streamproxy_plugin.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q .
	touch $@

# The test-only dependencies (setup.cfg's "test" extra: playwright).
$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install -q ".[test]"
	touch $@
