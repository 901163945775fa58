import json
import os

from edgekit.demo import run_demo


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
