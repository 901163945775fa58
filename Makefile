# Two commands set up and run everything on a fresh machine:
#   make demo   create .venv/ when missing, then train/export/verify/benchmark on digits
#   make test   the same set-up, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-estimate bench-converter bench-channels bench-techniques bench-harness bench-zoo bench-mcu bench-qat bench-search bench-streaming bench-distilbert bench-learning arm-check readme clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
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

# Channel pruning vs magnitude pruning on the demo model: int8 latency, accuracy, params.
bench-channels: $(STAMP)
	$(BIN)/python benchmarks/channel_prune.py $(if $(wildcard runs/demo/model.keras),--model runs/demo/model.keras)

# What each technique buys (tying, pruning, distillation, low-rank, quantization, architectures),
# written into docs/techniques.md.
bench-techniques: $(STAMP)
	$(BIN)/python benchmarks/techniques.py --docs docs/techniques.md $(if $(wildcard runs/demo/model.keras),--model runs/demo/model.keras)

# Harness fidelity vs litert-benchmark, timing-loop overhead, peak RSS vs getrusage, SSH vs local.
bench-harness: $(STAMP)
	@test -f runs/demo/model_int8.tflite || $(BIN)/edgekit demo --no-optimize
	$(BIN)/python benchmarks/harness_targets.py

# The models people have (keras.applications, Sequential, text; tf_keras and Keras 3) through every
# verb, written into docs/models.md's zoo table.
bench-zoo: $(STAMP)
	$(BIN)/python benchmarks/zoo.py --docs docs/models.md --json benchmarks/zoo.json

# Streaming export against the whole window: frame-by-frame equivalence, top-1, TFLM arena.
bench-streaming: $(STAMP)
	$(BIN)/python benchmarks/streaming.py

# DistilBERT reproduced small: an encoder halved by layer dropping + distillation, int8 against the
# teacher's float32 (accuracy, size, p50), written into docs/techniques.md.
bench-distilbert: $(STAMP)
	$(BIN)/python benchmarks/distilbert.py --docs docs/techniques.md

# On-device learning: a 0-4 digits model learning 5-9 through LiteRT (against Keras, nearest class
# mean, a full fine-tune), time per train step, peak RSS, file sizes.
bench-learning: $(STAMP)
	$(BIN)/python benchmarks/learning.py

# QAT against post-training int8 on a BatchNorm-heavy model (four recipes, two heads) and the demo.
bench-qat: $(STAMP)
	$(BIN)/python benchmarks/qat_targets.py

# edgekit search on the demo model: TPE against random search and the hand-made recipe
bench-search: $(STAMP)
	$(BIN)/python benchmarks/search_targets.py --docs docs/search.md --readme README.md

# The MLPerf Tiny models under TFLM's interpreter: arena, flash, agreement with LiteRT, the boards
# they fit; written into docs/mcu.md and README.md.
bench-mcu: $(STAMP)
	$(BIN)/python benchmarks/mcu_targets.py --docs docs/mcu.md --readme README.md

# The demo's .tflite files on ARM64 under QEMU (Pi 4: cortex-a72, Pi 5: cortex-a76) against this
# machine, same inputs: int8 outputs must be bit-identical. Prepares QEMU + an arm64 sysroot once.
arm-check: $(STAMP)
	@test -f runs/demo/model_int8.tflite || $(BIN)/edgekit demo --no-optimize
	$(BIN)/python -m edgekit.app.cli.arm_check runs/demo/model_float32.tflite runs/demo/model_int8.tflite --inputs runs/demo/digits_test.npz --samples 360 --strict

# Rewrite the generated tables of README.md and docs/ (between <!-- NAME:begin/end --> markers).
readme: $(STAMP)
	$(BIN)/python tools/readme.py

clean:
	rm -rf $(VENV) runs build *.egg-info
