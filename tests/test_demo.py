import json
import os

import pytest

from edgekit.demo import run_demo
from edgekit.errors import InputError

from conftest import assert_clean_error, run_cli


def test_demo_writes_a_report_measured_from_the_artifacts(tmp_path):
    out = str(tmp_path / "demo")
    lines = []
    report = run_demo(out, epochs=1, runs=5, warmup=1, log=lines.append)
    on_disk = json.loads(open(os.path.join(out, "report.json")).read())
    assert on_disk["variants"] == report["variants"]
    assert [v["name"] for v in report["variants"]] == ["float32", "int8"]
    for v in report["variants"]:
        assert {"name", "tflite", "size_bytes", "accuracy", "latency_ms", "peak_rss_mb"} <= set(v)
        assert v["size_bytes"] == os.path.getsize(v["tflite"])
        assert 0.0 <= v["accuracy"] <= 1.0
        assert {"p50", "p90", "p99", "mean"} <= set(v["latency_ms"])
        assert v["peak_rss_mb"] > 0
    f32, i8 = report["variants"]
    assert i8["fully_integer"] and i8["input_dtype"] == "INT8" and i8["output_dtype"] == "INT8"
    assert not f32["fully_integer"]
    # the model's size ratio is fixed by its architecture, not by training
    assert i8["size_bytes"] <= 0.3 * f32["size_bytes"]
    md = open(os.path.join(out, "report.md")).read()
    assert "| int8 " in md and "| float32 " in md
    assert os.path.isfile(os.path.join(out, "model.keras"))
    assert any("p50 ms" in line for line in lines)


def test_demo_takes_a_registered_model_by_name(tmp_path):
    report = run_demo(str(tmp_path / "ds"), model_name="ds_cnn", epochs=1, runs=3, warmup=1, log=None)
    assert report["model"]["name"] == "digits_ds_cnn"
    assert report["model"]["params"] == 24_778
    assert report["variants"][1]["fully_integer"]


def test_demo_refuses_a_model_that_is_not_a_digits_classifier(tmp_path):
    out = tmp_path / "ae"
    with pytest.raises(InputError, match="10-class image classifier; fc_autoencoder .* Choose one of: .*ds_cnn"):
        run_demo(str(out), model_name="fc_autoencoder", log=None)
    assert not out.exists()
    assert_clean_error(run_cli("demo", "--model", "mobilenet_v9", "--out", tmp_path / "x"),
                       contains="unknown model 'mobilenet_v9'; available:")
    assert not (tmp_path / "x").exists()
