# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it (editable).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-pseudo test install jvm bench clean

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lambdaflow demo

# The real stack's jars (Kafka, Hadoop, Trino, delta-spark), pinned in deploy/jvm/pom.xml: resolved by Maven
# into ~/.m2 and the JVM cache (~/.cache/lambdaflow/jvm), never into the repository. A no-op once cached.
jvm: $(STAMP)
	$(BIN)/lambdaflow services fetch

# The same loop on the real stack: Apache Kafka, HDFS, Spark standalone, Airflow's scheduler, Trino.
demo-pseudo: jvm
	$(BIN)/lambdaflow --profile pseudo demo --events 100000 --live-events 10000

test: $(STAMP) jvm
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/batch_views.py

clean:
	rm -rf $(VENV) .lambdaflow .lambdaflow-pseudo build *.egg-info
