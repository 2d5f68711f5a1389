# `make run`: set up and run the gateway on its embedded default (SQLite, example config).
# `make test`: install what the tests need and run them (this is what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= config/gateway.example.toml
APT_PACKAGES := openssh-server postgresql dovecot-imapd postfix
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test venv test-deps lint bench

$(VENV)/.installed: pyproject.toml
	@python3 -c 'import ensurepip' 2>/dev/null || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/gateway --config $(CONFIG) db upgrade
	$(VENV)/bin/gateway --config $(CONFIG) run

test-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "postfix postfix/main_mailer_type select Local only" | $(SUDO) debconf-set-selections; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy gateway

test: test-deps lint
	$(VENV)/bin/pytest -q

# Benchmarks need Postfix (smtp-source, smtp-sink, a private instance) and sshd; not run by CI.
bench: venv test-deps
	$(PY) -m bench
