# packwise: every set-up step behind two commands, `make demo` and `make test`.
# Needs Python 3.11+, Java 17+ and Maven on PATH; everything else (the venv, the Python packages, the
# Kafka jars from Maven Central) is installed here on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.packwise-installed

.PHONY: demo test install kafka-jars clean

demo: install kafka-jars  ## the local broker, a worker, a simulated fulfillment center, decisions streaming out
	$(BIN)/packwise demo

test: install kafka-jars  ## the whole suite, against a real broker the tests start and stop themselves
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "packwise needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@command -v java >/dev/null || { echo "packwise needs Java 17+ for the local Kafka broker: install a JDK (e.g. apt-get install openjdk-17-jdk-headless)"; exit 2; }
	@command -v mvn >/dev/null || { echo "packwise needs Maven to fetch the Kafka jars: install it (e.g. apt-get install maven)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar off -e ".[test]"
	touch $(STAMP)

kafka-jars: install
	@$(BIN)/python -c 'from streams.broker import resolve_jars; resolve_jars()'

clean:
	rm -rf $(VENV) deploy/kafka/lib packwise.egg-info
