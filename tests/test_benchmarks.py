"""Every benchmark runs end to end at tiny sizes (``--smoke``, benchmarks/smoke.py), each script in
a fresh process as ``make bench-*`` runs it: an API change that breaks a benchmark fails here, not
in a full run weeks later. Each test checks what the run printed or wrote (its rows, finite
numbers), not only its exit code, and that it wrote nothing outside its temporary directory."""

import glob
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
# the committed files the benchmarks write in a full run (--docs, --readme, --update)
COMMITTED = ["README.md", os.path.join("benchmarks", "zoo.json")] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*"))
)
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _stat():
    return {p: (s.st_size, s.st_mtime_ns) for p in COMMITTED for s in [os.stat(os.path.join(ROOT, p))]}


def smoke(script, tmp_path, *args):
    """Run ``benchmarks/SCRIPT --smoke ARGS`` (cwd and TMPDIR in ``tmp_path``); its stdout. It must
    exit 0, leave the committed files and its temporary directories behind it untouched and gone."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = _stat()
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), "--smoke", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, TMPDIR=str(tmp)),
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert _stat() == before, "a smoke run changed a committed file"
    assert not list(tmp.glob("edgekit-smoke-*")), "a smoke run left its temporary directory"
    assert not (tmp_path / "runs").exists()
    return proc.stdout


def row(out: str, name: str, numbers: int = 1) -> str:
    """The printed line that starts with the row ``name`` (after a PASS/FAIL mark or a table's
    pipe), holding at least ``numbers`` finite numbers besides the name's own."""
    lines = [ln for ln in out.splitlines() if re.sub(r"^(PASS|FAIL|\|)\s+", "", ln).startswith(name)]
    assert len(lines) == 1, f"row {name!r}: {len(lines)} lines in\n{out[-3000:]}"
    values = [float(v.replace(",", "")) for v in NUMBER.findall(lines[0][lines[0].index(name) + len(name) :])]
    assert len(values) >= numbers and all(math.isfinite(v) for v in values), lines[0]
    return lines[0]


def finite(*values):
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def done(out: str):
    assert "smoke run done: every code path ran" in out


def test_channel_prune(tmp_path):
    out = smoke("channel_prune.py", tmp_path)
    assert "ms = " in row(out, "channel-pruned 0.5 int8 p50 <= 0.6x unpruned int8", 3)
    row(out, "  magnitude-pruned 0.5 int8 p50 (for comparison)", 3)
    row(out, "channel-pruned int8 accuracy within 1.5 points of unpruned float", 4)
    params = row(out, "channel-pruned params <= 0.4x", 4)
    pruned, full = (int(v.replace(",", "")) for v in re.search(r"([\d,]+) / ([\d,]+) =", params).groups())
    assert 0 < pruned < full
    assert all(f"{k} " in row(out, "int8 file sizes", 3) for k in ("unpruned", "channels", "magnitude"))
    done(out)


def test_converter_targets(tmp_path):
    out = smoke("converter_targets.py", tmp_path)
    row(out, "MobileNetV2 1.0/224 int8 <= 0.29x float32", 3)
    row(out, "inspect: weights + quant params, read per tensor, >= 99% of the file", 4)
    row(out, "int8 export + verify (100 samples) + layer errors <= 60 s", 3)
    row(out, "MobileNetV2 int8 fully integer, agreement on random images", 1)
    assert "x the plain converter" in row(out, "smoke 32x32 int8: export + verify + layer report + gate", 3)
    row(out, "90%-sparse MLP float32 --sparse <= 0.2x dense", 4)
    assert "refused" in row(out, "int8 + sparse that fails under XNNPACK is caught", 0)
    row(out, "tied LM 2000x16: params, float32 file tied vs untied", 5)
    row(out, "tied LM int8 file <= 0.55x the untied int8 file", 4)
    assert "smoke: no --demo-report" in out  # the demo rows: test_demo_targets, on a smoke demo's report
    done(out)


DEMO_ROWS = [
    "Keras float accuracy >= 0.97",
    "float32 .tflite accuracy",
    "int8 accuracy within 1 point of float",
    "int8 fully integer, int8 I/O (read from the file)",
    "int8 size <= 0.3x float32",
    "int8 p50 < float32 p50",
    "pruned 0.8 (fine-tune < 20 steps is in the tests): every pruned kernel >= 0.79 zeros",
    "2:4: every group of 4 input weights has >= 2 zeros, every pruned kernel",
    "cluster 16: <= 16 distinct values per clustered kernel",
    "cluster 16: gzip int8 <= 0.6x gzip plain int8",
    "80%-pruned int8 accuracy within 1 point of float",
    "QAT int8 accuracy within 0.5 point of float",
    "PCQAT int8 accuracy within 1.5 points of float",
    "PCQAT keeps zeros (kernels) and <= 16 values",
    "demo wall time (s), target <= 300",
]


def test_demo_targets(tmp_path):
    demo = tmp_path / "demo"
    out = smoke("demo_targets.py", tmp_path, "--out", demo)
    for name in DEMO_ROWS:
        row(out, name, 0 if "2:4" in name or "fully integer" in name else 1)
    report = json.loads((demo / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == [
        "float32",
        "int8",
        "channels 0.5 + int8",
        "pruned 0.8 + int8",
        "2:4 + int8",
        "clustered 16 + int8",
        "QAT int8",
        "PCQAT int8",
    ]
    assert report["model"]["name"] == "digits_ds_cnn" and report["model"]["params"] == 24_778
    assert all(finite(v["accuracy"], v["latency_ms"]["p50"]) and v["size_bytes"] > 0 for v in report["variants"])
    done(out)
    _measured_from_the_artifacts(report, str(demo), out)
    _optimized_variants(report, str(demo))
    # converter_targets.py --demo-report's rows, on this report
    sys.path.insert(0, BENCH)
    import converter_targets

    rows = converter_targets.demo_rows(str(demo / "report.json"))
    assert [r[0] for r in rows] == ["demo int8 accuracy within 1 point of Keras", "demo int8 top-1 agreement >= 98%"]
    assert all(re.search(r"\d\.\d{4}", r[1]) and isinstance(r[2], bool) for r in rows)


def _measured_from_the_artifacts(report: dict, out: str, printed: str):
    """The demo's report: every figure measured from the files it wrote."""
    for v in report["variants"]:
        assert {"name", "tflite", "size_bytes", "accuracy", "latency_ms", "peak_rss_mb"} <= set(v)
        assert v["size_bytes"] == os.path.getsize(os.path.join(out, os.path.basename(v["tflite"])))
        # on the test split by the harness: what the export's verification measured on the same file
        assert v["accuracy"] == pytest.approx(v["export"]["accuracy"], abs=1e-12)
        assert {"p50", "p90", "p99", "mean"} <= set(v["latency_ms"]) and v["peak_rss_mb"] > 0
    f32, i8 = report["variants"][:2]
    assert i8["fully_integer"] and i8["input_dtype"] == "INT8" and i8["output_dtype"] == "INT8"
    assert not f32["fully_integer"]
    # fixed by the architecture, not by training: DS-CNN's small convs keep more of their quantization
    # parameters (0.49x); the demo's own model's 0.3x is demo_targets.py's full-run row
    assert i8["size_bytes"] <= 0.5 * f32["size_bytes"]
    md = open(os.path.join(out, "report.md")).read()
    assert "| int8 " in md and "| float32 " in md
    assert os.path.isfile(os.path.join(out, "model.keras")) and "p50 ms" in printed


def _optimized_variants(report: dict, out: str):
    """What each of the demo's optimized variants achieved, read from the weights and files (one
    epoch of fine-tune each)."""
    f32, i8, channels, pruned, two4, clustered, qat, pcqat = report["variants"]
    ch = channels["optimization"]["channels"]
    assert ch["params"][1] < 0.5 * ch["params"][0] and channels["size_bytes"] < 0.6 * i8["size_bytes"]
    assert all(v["fully_integer"] for v in report["variants"][1:])
    assert all(v["gzip_bytes"] < v["size_bytes"] for v in report["variants"])
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
    assert report["pareto_png"] == "pareto.png" and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy against latency" in open(os.path.join(out, "report.md")).read()
    # the chart reads at a glance: the front is the undominated variants, no two labels overlap
    from edgekit.app.charts import label_overlaps, pareto_figure, pareto_front

    pts = [(v["latency_ms"]["p50"], v["accuracy"]) for v in report["variants"]]
    front = pareto_front(report["variants"])
    best = max(range(8), key=lambda i: (pts[i][1], -pts[i][0]))
    assert best in front and all(
        any(pts[j][0] <= pts[i][0] and pts[j][1] >= pts[i][1] for j in front) for i in range(8) if i not in front
    )
    fig, labels = pareto_figure(report["variants"], "demo")
    assert len(labels) >= 8 and label_overlaps(fig, labels) == []
    # the int8 export also went through TFLM's interpreter (tflite-micro is a test dependency)
    assert i8["export"]["mcu"]["arena_bytes"] > 0 and i8["export"]["mcu"]["agreement"] >= 0.95
    assert f"on a microcontroller: {i8['mcu']}" in open(os.path.join(out, "report.md")).read()
    assert i8["mcu"].startswith(f"TFLM: arena {i8['export']['mcu']['arena_bytes']:,} B")


def test_harness_targets(tmp_path):
    out = smoke("harness_targets.py", tmp_path)
    for name in ("demo float32", "demo int8", "MobileNetV2 float32", "MobileNetV2 int8"):
        assert "×" in row(out, f"fidelity {name}: harness p50 vs litert-benchmark median (±10%)", 3)
        row(out, f"memory {name}: reported peak RSS vs getrusage of the child (±10%)", 2)
    for name in ("demo_int8.tflite", "mbv2_int8.tflite"):
        row(out, f"overhead {name}: harness loop vs bare invoke() loop (≤ 2%)", 3)
    row(out, "memory: MobileNetV2 float32 footprint > int8 footprint", 3)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from loopback import sshd_path  # tools/loopback.py

    if sshd_path() or os.environ.get("EDGEKIT_REQUIRE_SSHD"):
        assert "True" in row(out, "remote over SSH (127.0.0.1): same JSON keys as local", 0)
        row(out, "remote mbv2_int8.tflite: median vs local (±15%)", 3)
        assert re.search(r"^\d+/13 targets met$", out, re.M)
    else:  # as a full run without openssh-server
        assert "skipped: no sshd" in row(out, "remote over SSH (needs openssh-server)", 0)
    done(out)


def test_int8_size_estimate(tmp_path):
    out = smoke("int8_size_estimate.py", tmp_path)
    assert "smoke: left out resnet50, mobilenet_v1" in out
    for name in ("ds_cnn", "fc_autoencoder", "mobilenet_v2", "resnet8", "tied_lm", "vgg16"):
        line = row(out, name + " ", 4)
        assert re.search(r"[-+]\d+\.\d%", line), line
    done(out)


def test_streaming(tmp_path):
    out = smoke("streaming.py", tmp_path, "--json", tmp_path / "s.json")
    line = row(out, "gru ", 9)
    (r,) = json.loads((tmp_path / "s.json").read_text())
    assert r["float32_max_diff"] <= 1e-5 and r["int8_arena"] > 0, line  # float32 frame by frame is exact at any size
    done(out)


def test_distilbert(tmp_path):
    out = smoke("distilbert.py", tmp_path, "--json", tmp_path / "d.json")
    r = json.loads((tmp_path / "d.json").read_text())
    assert r["student_layers"] == 1 and r["layers"] == 2 and r["student_params"] < r["teacher_params"]
    assert r["int8_fully_integer"] and r["int8_bytes"] < r["dynamic_bytes"] < r["student_float32_bytes"]
    assert finite(r["int8_p50_ms"], r["dynamic_p50_ms"], r["teacher_p50_ms"], r["int8_file_accuracy"])
    assert finite(r["distilled_accuracy"], r["labels_only_accuracy"], r["scratch_accuracy"])
    row(out, "student, labels only", 1)
    done(out)


def test_learning(tmp_path):
    out = smoke("learning.py", tmp_path, "--json", tmp_path / "l.json")
    r = json.loads((tmp_path / "l.json").read_text())
    assert [(x["k"], x["replay"]) for x in r["rows"]] == [(k, rp) for k in (5, 10, 20) for rp in (False, True)]
    assert all(x["device"] == x["keras"] for x in r["rows"])  # the same updates, float32, the same batches
    assert finite(r["train_step_ms"], r["inference_ms"], r["train_peak_mb"], r["infer_peak_mb"])
    row(out, "20           5-9 + 0-4", 8)
    done(out)


def test_mcu_targets(tmp_path):
    out = smoke("mcu_targets.py", tmp_path, "--json", tmp_path / "mcu.json")
    assert "smoke: left out resnet8, mobilenet_v1" in out
    rows = json.loads((tmp_path / "mcu.json").read_text())
    assert [(r["model"], r["preset"]) for r in rows] == [
        ("ds_cnn", "digits"),
        ("fc_autoencoder", "digits"),
        ("ds_cnn", "reference"),
        ("fc_autoencoder", "reference"),
    ]
    for r in rows:
        assert r["flash_bytes"] > 0 and r["arena_bytes"] > 0 and isinstance(r["minimal"], bool)
        assert finite(r["estimate_error_pct"], r["host_invoke_ms"]) and r["fits"]
    ds_cnn = rows[0]
    assert finite(ds_cnn["agreement"], ds_cnn["accuracy"], ds_cnn["max_step_diff"], ds_cnn["max_step_diff_logits"])
    assert "| ds_cnn " in out and "| fc_autoencoder | reference |" in out  # the two tables
    done(out)


def test_search_targets(tmp_path):
    out = smoke("search_targets.py", tmp_path, "--out", tmp_path / "search")
    result = json.loads((tmp_path / "search" / "search_targets.json").read_text())
    assert [r[0] for r in result["rows"]] == [
        "hand-made channels 0.5 + int8",
        "a front point dominates or equals it",
        "best within 1 point of float32: ≥ 8× faster, ≥ 25× smaller (side by side)",
        "hypervolume TPE / random ≥ 1.1× (log axes)",
        "hypervolume TPE / random ≥ 1.1× (linear ratios, saturated above 10×: not a target)",
        "wall time TPE / random (same space, budget, seed)",
    ]
    assert [r[2] for r in result["rows"]][-2:] == [None, None]  # printed, not targets
    hv = result["hypervolume"]
    assert set(hv) == {"log", "linear"} and all(
        set(v) == {"tpe", "random"} and finite(*v.values()) for v in hv.values()
    )
    assert set(result["seconds"]) == {"tpe", "random"} and finite(*result["seconds"].values())
    assert result["side_by_side"] and all(
        finite(m["p50_ms"], m["accuracy"]) and m["size_bytes"] > 0 for m in result["side_by_side"]
    )
    for sampler in ("tpe", "random"):
        study = json.loads((tmp_path / "search" / sampler / "search.json").read_text())
        assert len([t for t in study["trials"] if t["state"] == "COMPLETE"]) == 2
    assert "| hand-made channels 0.5 + int8" in out
    done(out)


TECHNIQUES = {
    "tying,vgg": ["parameter sharing (weight tying)"] * 2 + ["pruning"],
    "demo": ["pruning (accuracy)", "distillation", "low-rank factorization", "quantization", "efficient architecture"],
}


@pytest.mark.parametrize("rows", list(TECHNIQUES))
def test_techniques(tmp_path, rows):
    # in two halves of about 20 s each (every row at once: 32 s)
    out = smoke("techniques.py", tmp_path, "--rows", rows, "--json", tmp_path / "t.json")
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["technique"] for r in result["rows"]] == TECHNIQUES[rows] and finite(result["seconds"])
    for r in result["rows"]:
        assert r["example"] and NUMBER.search(r["measured"]) and (r["ok"] is None) == (r["target"] == "")
        numbers = [float(v.replace(",", "")) for v in NUMBER.findall(r["measured"])]
        assert numbers and all(math.isfinite(v) for v in numbers), r
    assert re.search(r"^updated the techniques table in .*techniques\.md$", out, re.M)
    done(out)


def test_zoo(tmp_path):
    out = smoke("zoo.py", tmp_path, "--json", tmp_path / "zoo.json")
    sys.path.insert(0, BENCH)
    import zoo

    cells = {(c["model"], c["flavour"], c["verb"]): c for c in json.loads((tmp_path / "zoo.json").read_text())}
    assert len(cells) == len(zoo.MODELS) * len(zoo.FLAVOURS) * len(zoo.VERBS)  # the committed cells, merged
    for key in zoo.SMOKE_CELLS:
        assert cells[key]["status"] == "ok" and finite(cells[key]["seconds"]), cells[key]
        assert re.search(rf"^{key[0]} +{key[1]} +{key[2]} +ok ", out, re.M), key  # measured in this run
    assert "Works per verb: export " in out and "internal errors: 0." in out


@pytest.mark.parametrize(
    "script, flags",
    [
        ("techniques.py", ["--docs", "docs/techniques.md"]),
        ("mcu_targets.py", ["--readme", "README.md"]),
        ("search_targets.py", ["--docs", "docs/search.md"]),
        ("zoo.py", ["--update", "benchmarks/zoo.json"]),
    ],
)
def test_smoke_refuses_to_write_committed_files(script, flags):
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), "--smoke", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--smoke writes nothing outside a temporary directory: drop {flags[0]}" in proc.stderr
