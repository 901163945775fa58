import json
import os

import pytest
from conftest import assert_clean_error, run_cli

from edgekit.app.demo import run_demo
from edgekit.core.errors import InputError


def test_demo_writes_a_report_measured_from_the_artifacts(tmp_path):
    out = str(tmp_path / "demo")
    lines = []
    report = run_demo(out, epochs=1, runs=5, warmup=1, optimized=False, log=lines.append)
    on_disk = json.loads(open(os.path.join(out, "report.json")).read())
    assert on_disk["variants"] == report.variants
    assert [v["name"] for v in report.variants] == ["float32", "int8"]
    for v in report.variants:
        assert {"name", "tflite", "size_bytes", "accuracy", "latency_ms", "peak_rss_mb"} <= set(v)
        assert v["size_bytes"] == os.path.getsize(v["tflite"])
        # on the test split by the harness: what the export's verification measured on the same file
        assert v["accuracy"] == pytest.approx(v["export"]["accuracy"], abs=1e-12)
        assert {"p50", "p90", "p99", "mean"} <= set(v["latency_ms"])
        assert v["peak_rss_mb"] > 0
    f32, i8 = report.variants
    assert i8["fully_integer"] and i8["input_dtype"] == "INT8" and i8["output_dtype"] == "INT8"
    assert not f32["fully_integer"]
    # the model's size ratio is fixed by its architecture, not by training
    assert i8["size_bytes"] <= 0.3 * f32["size_bytes"]
    md = open(os.path.join(out, "report.md")).read()
    assert "| int8 " in md and "| float32 " in md
    assert os.path.isfile(os.path.join(out, "model.keras"))
    assert any("p50 ms" in line for line in lines)


def test_demo_optimized_variants_on_a_registered_model(tmp_path):
    # ds_cnn (24k params, BatchNorm after every conv) keeps this fast: one epoch per fine-tune.
    out = str(tmp_path / "ds")
    report = run_demo(out, model_name="ds_cnn", epochs=2, runs=3, warmup=1, fine_tune_epochs=1, log=None)
    assert report.model["name"] == "digits_ds_cnn"
    assert report.model["params"] == 24_778
    assert [v["name"] for v in report.variants] == [
        "float32",
        "int8",
        "channels 0.5 + int8",
        "pruned 0.8 + int8",
        "2:4 + int8",
        "clustered 16 + int8",
        "QAT int8",
        "PCQAT int8",
    ]
    f32, i8, channels, pruned, two4, clustered, qat, pcqat = report.variants
    ch = channels["optimization"]["channels"]
    assert ch["params"][1] < 0.5 * ch["params"][0] and channels["size_bytes"] < 0.6 * i8["size_bytes"]
    assert all(v["fully_integer"] for v in report.variants[1:])
    assert all(v["gzip_bytes"] < v["size_bytes"] for v in report.variants)
    # what each optimization achieved, read from the weights (1 epoch of fine-tune each here)
    assert pruned["optimization"]["min_zeros_pruned"] >= 0.79
    assert two4["optimization"]["two_four_compliant"] and two4["optimization"]["min_zeros_pruned"] >= 0.5
    not_dw = lambda v: [l for l in v["optimization"]["weights"]["layers"] if l["kind"] != "DepthwiseConv2D"]  # noqa: E731
    assert max(l["unique"] for l in not_dw(clustered)) <= 16
    assert max(l["unique"] for l in not_dw(pcqat)) <= 16 and min(l["zeros"] for l in not_dw(pcqat)) >= 0.79
    assert pcqat["optimization"]["recipe"] == "pruned 0.8 + int8 → cluster 16 → qat"
    assert clustered["export"]["per_channel"] is False
    assert clustered["gzip_bytes"] < i8["gzip_bytes"] and pcqat["gzip_bytes"] < pruned["gzip_bytes"]
    assert qat["optimization"]["keras_accuracy"] is not None
    png = os.path.join(out, "pareto.png")
    assert report.pareto_png == "pareto.png" and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy against latency" in open(os.path.join(out, "report.md")).read()
    # the chart reads at a glance: the front is the undominated variants, no two labels overlap
    from edgekit.app.charts import label_overlaps, pareto_figure, pareto_front

    pts = [(v["latency_ms"]["p50"], v["accuracy"]) for v in report.variants]
    front = pareto_front(report.variants)
    best = max(range(8), key=lambda i: (pts[i][1], -pts[i][0]))
    assert best in front and all(
        any(pts[j][0] <= pts[i][0] and pts[j][1] >= pts[i][1] for j in front) for i in range(8) if i not in front
    )
    fig, labels = pareto_figure(report.variants, "demo")
    assert len(labels) >= 8 and label_overlaps(fig, labels) == []
    # the int8 export also went through TFLM's interpreter (tflite-micro is a test dependency)
    assert i8["export"]["mcu"]["arena_bytes"] > 0 and i8["export"]["mcu"]["agreement"] >= 0.95
    assert f"on a microcontroller: {i8['mcu']}" in open(os.path.join(out, "report.md")).read()
    assert i8["mcu"].startswith(f"TFLM: arena {i8['export']['mcu']['arena_bytes']:,} B")


def test_demo_refuses_a_model_that_is_not_a_digits_classifier(tmp_path):
    out = tmp_path / "ae"
    with pytest.raises(InputError, match="10-class image classifier; fc_autoencoder .* Choose one of: .*ds_cnn"):
        run_demo(str(out), model_name="fc_autoencoder", log=None)
    assert not out.exists()
    assert_clean_error(
        run_cli("demo", "--model", "mobilenet_v9", "--out", tmp_path / "x"),
        contains="unknown model 'mobilenet_v9'; available:",
    )
    assert not (tmp_path / "x").exists()
