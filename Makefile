# Two commands set up and run everything on a fresh machine:
#   make demo   create .venv/ when missing, then train/export/verify/benchmark on digits
#   make test   the same set-up, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-estimate bench-converter readme clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo

test: $(STAMP)
	$(BIN)/pytest

# The issue targets measured side by side in one run (see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/demo_targets.py

# The profiler's int8 size estimate against real int8 files, one per registered model.
bench-estimate: $(STAMP)
	$(BIN)/python benchmarks/int8_size_estimate.py

# Converter targets: MobileNetV2 1.0/224 int8 size and export time, sparse encoding.
bench-converter: $(STAMP)
	$(BIN)/python benchmarks/converter_targets.py $(if $(wildcard runs/demo/report.json),--demo-report runs/demo/report.json)

# Rewrite the README's generated tables (between <!-- NAME:begin/end --> markers).
readme: $(STAMP)
	$(BIN)/python -m edgekit.readme README.md

clean:
	rm -rf $(VENV) runs build *.egg-info
