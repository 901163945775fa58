"""Every conversion mode, I/O type, calibration source and the int8 diagnostics, on tiny models."""

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli

from edgekit.converters import export, inspect_tflite, kernel_zeros, layer_errors
from edgekit.converters.inspection import INTEGER_TYPES
from edgekit.core.errors import InputError, VerificationError
from edgekit.models import profile


def _export(model, ds, tmp_path, mode, **kw):
    kw.setdefault("calibration", ds.x_train)
    kw.setdefault("calib_samples", 32)
    kw.setdefault("overwrite", True)  # several exports of one mode per test
    return export(
        model, str(tmp_path / f"{mode}.tflite"), mode, validation_data=(ds.x_test[:100], ds.y_test[:100]), **kw
    )


def test_float16_and_dynamic_shrink_weights_and_stay_float_compute(digits_ds, tmp_path):
    from edgekit import keras

    keras.utils.set_random_seed(0)  # kernels of >= 1024 weights: the converter keeps smaller ones float
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits_ds.x_train, digits_ds.y_train, epochs=2, verbose=0)
    f32 = inspect_tflite(_export(model, digits_ds, tmp_path, "float32").path)
    for mode, weight_dtype, ratio in (("float16", "FLOAT16", 0.52), ("dynamic", "INT8", 0.3)):
        rep = _export(model, digits_ds, tmp_path, mode)
        info = inspect_tflite(rep.path)
        assert info.inputs[0]["dtype"] == "FLOAT32" and rep.io == "float32"
        assert any(t.constant and t.dtype == weight_dtype for t in info.tensors)
        assert info.weight_bytes <= ratio * f32.weight_bytes  # biases and tiny kernels stay float32
        assert rep.agreement >= 0.95 and rep.snr_db > 20 and rep.cosine > 0.99
        assert rep.calib is None and rep.worst_layers == []


def test_int16x8_is_integer_with_int16_activations(tiny_model, digits_ds, tmp_path):
    rep = _export(tiny_model, digits_ds, tmp_path, "int16x8")
    info = inspect_tflite(rep.path)
    assert rep.fully_integer and info.inputs[0]["dtype"] == "INT16" and info.outputs[0]["dtype"] == "INT16"
    assert "INT16" in info.ops[0].output_dtypes
    assert rep.agreement >= 0.95


@pytest.mark.parametrize("io,edge_ops", [("uint8", set()), ("float32", {"QUANTIZE", "DEQUANTIZE"})])
def test_int8_io_types(tiny_model, digits_ds, tmp_path, io, edge_ops):
    rep = _export(tiny_model, digits_ds, tmp_path, "int8", io=io)
    info = inspect_tflite(rep.path)
    assert info.inputs[0]["dtype"] == io.upper() and info.outputs[0]["dtype"] == io.upper()
    # the body computes on integers; with float32 I/O only the edge ops touch floats
    assert {op.op for op in info.float_ops} == edge_ops
    for op in info.ops:
        if op.op not in edge_ops:
            assert set(op.input_dtypes + op.output_dtypes) <= INTEGER_TYPES, op
    assert rep.agreement >= 0.9


def test_io_that_does_not_fit_the_mode_is_an_error(tiny_model, digits_ds):
    with pytest.raises(
        InputError, match="`io='int16'` does not apply to int8 models; use one of: int8, uint8, float32"
    ):
        export(tiny_model, None, "int8", calibration=digits_ds.x_train, io="int16")
    with pytest.raises(InputError, match="`io='int8'` does not apply to float16"):
        export(tiny_model, None, "float16", io="int8")


def test_calibration_sources_are_recorded(tiny_model, digits_ds, tmp_path):
    import tensorflow as tf

    x = digits_ds.x_train[:40]
    sources = {
        "tf.data": tf.data.Dataset.from_tensor_slices((x, digits_ds.y_train[:40])).batch(8),
        "generator": lambda: (x[i] for i in range(len(x))),
        "dataset": digits_ds,
        "digits": "digits",
    }
    for label, source in sources.items():
        rep = export(
            tiny_model,
            None,
            "int8",
            calibration=source,
            calib_samples=24,
            validation_data=(x, None),
            layer_report=False,
        )
        assert rep.calib["samples"] == 24 and rep.calib_samples == 24, label
        assert rep.calib["selection"] == ("first" if label in ("tf.data", "generator") else "random")
        assert rep.fully_integer
    with pytest.raises(InputError, match="calibration data is empty"):
        export(tiny_model, None, "int8", calibration=lambda: iter(()))
    with pytest.raises(InputError, match=r"calibration data has shape \(8, 5\)"):
        export(tiny_model, None, "int8", calibration=tf.data.Dataset.from_tensor_slices(np.zeros((8, 5), np.float32)))


def test_calibration_from_a_directory_of_images(tiny_model, tmp_path):
    import tensorflow as tf

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # RGB files of another size: converted to 32x32x1
        img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        (images / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "m.tflite"
    proc = run_cli("export", tmp_path / "tiny.keras", "--quant", "int8", "--calib", images, "-o", out)
    assert_clean_error(proc, contains="model file not found")
    tiny_model.save(str(tmp_path / "tiny.keras"))
    proc = run_cli("export", tmp_path / "tiny.keras", "--quant", "int8", "--calib", images, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "calibrated on 6 samples of images" in proc.stdout
    assert inspect_tflite(str(out)).fully_integer
    (images / "bad.png").write_bytes(b"not a png")
    proc = run_cli(
        "export", tmp_path / "tiny.keras", "--quant", "int8", "--calib", images, "-o", tmp_path / "m2.tflite"
    )
    assert_clean_error(proc, contains="cannot decode")
    assert not (tmp_path / "m2.tflite").exists()


def test_int8_report_names_the_worst_layers(tiny_model, digits_ds, exported):
    errors = layer_errors(tiny_model, digits_ds.x_train[:32], digits_ds.x_test[:16], samples=16)
    names = {l.name for l in tiny_model.layers}
    assert errors and all(e.layer in names for e in errors)
    assert [e.rmse_over_scale for e in errors] == sorted((e.rmse_over_scale for e in errors), reverse=True)
    assert all(e.rmse_over_scale > 0 for e in errors)
    worst = exported["int8"].worst_layers
    assert worst and worst[0]["layer"] in names and {"op", "rmse_over_scale", "tensor"} <= set(worst[0])


def test_layer_report_export_equals_a_plain_int8_conversion(tiny_model, digits_ds, exported):
    # With the layer report on, the export quantizes the debugger's calibrated model instead of
    # calibrating twice: the same ops, tensors and outputs as the converter's own int8 path.
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.converters import convert

    plain = convert(tiny_model, "int8", digits_ds.x_train, calib_samples=64)
    with open(exported["int8"].path, "rb") as f:
        reused = f.read()
    assert exported["int8"].worst_layers
    outs = []
    for buf in (plain, reused):
        it = Interpreter(model_content=buf)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zero = i["quantization"]
        q = np.clip(np.round(digits_ds.x_test[:20] / scale + zero), -128, 127).astype(np.int8)
        rows = []
        for k in range(len(q)):
            it.set_tensor(i["index"], q[k : k + 1])
            it.invoke()
            rows.append(it.get_tensor(o["index"]).copy())
        outs.append((np.concatenate(rows), [(d["name"], d["dtype"]) for d in it.get_tensor_details()]))
    assert outs[0][1] == outs[1][1]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])


def test_keep_float_named_layer(tiny_model, digits_ds, tmp_path):
    dense = [l.name for l in tiny_model.layers if type(l).__name__ == "Dense"][0]
    rep = _export(tiny_model, digits_ds, tmp_path, "int8", keep_float=dense)
    info = inspect_tflite(rep.path)
    assert rep.kept_float == [dense] and not rep.fully_integer
    float_compute = [op.op for op in info.float_ops if op.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert sorted(float_compute) == ["FULLY_CONNECTED", "SOFTMAX"]  # the Dense layer and its activation
    assert info.op_counts["CONV_2D"] == 2 and all(
        set(op.input_dtypes) <= INTEGER_TYPES for op in info.ops if op.op == "CONV_2D"
    )
    with pytest.raises(InputError, match="not a quantized layer of this model"):
        _export(tiny_model, digits_ds, tmp_path, "int8", keep_float="no_such_layer")


def test_keep_float_auto_reaches_the_agreement(tiny_model, digits_ds, tmp_path):
    noise = np.random.default_rng(1).random((60, 32, 32, 1)).astype(np.float32)
    plain = export(
        tiny_model,
        None,
        "int8",
        calibration=digits_ds.x_train,
        calib_samples=32,
        validation_data=(noise, None),
        layer_report=False,
    )
    target = 1.0
    assert plain.agreement < target  # int8 alone misses it on noise
    rep = export(
        tiny_model,
        str(tmp_path / "auto.tflite"),
        "int8",
        calibration=digits_ds.x_train,
        calib_samples=32,
        validation_data=(noise, None),
        io="float32",
        keep_float="auto",
        min_agreement=target,
    )
    assert rep.agreement >= target and rep.kept_float
    assert any(rep.kept_float[0] == w["layer"] for w in rep.worst_layers)
    with pytest.raises(InputError, match="`keep_float='auto'` needs `min_agreement`"):
        export(tiny_model, None, "int8", calibration=digits_ds.x_train, keep_float="auto")


def test_sparse_encoding_and_int8_sparse_caught_by_xnnpack_check(tmp_path):
    from edgekit import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((256,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    for layer in model.layers:  # 90% of each kernel zeroed by magnitude
        k, b = layer.get_weights()
        k[np.abs(k) < np.quantile(np.abs(k), 0.9)] = 0
        layer.set_weights([k, b])
    x = np.random.default_rng(0).random((64, 256)).astype(np.float32)
    dense = export(model, str(tmp_path / "dense.tflite"), "float32", validation_data=(x, None))
    sparse = export(model, str(tmp_path / "sparse.tflite"), "float32", validation_data=(x, None), sparse=True)
    assert sparse.sparse and sparse.size_bytes <= 0.2 * dense.size_bytes
    assert sparse.agreement == 1.0
    # zeros read back from the files: the float ones hold exactly the model's, int8 adds the weights it rounds to 0
    kernels = [layer.get_weights()[0] for layer in model.layers]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert kernel_zeros(dense.path) == pytest.approx(zeros) and kernel_zeros(sparse.path) == pytest.approx(zeros)
    int8 = export(
        model, str(tmp_path / "int8.tflite"), "int8", calibration=x, validation_data=(x, None), layer_report=False
    )
    assert zeros <= kernel_zeros(int8.path) < zeros + 0.02
    with pytest.raises(VerificationError, match="XNNPACK.*without --sparse"):
        export(
            model,
            str(tmp_path / "int8_sparse.tflite"),
            "int8",
            calibration=x,
            validation_data=(x, None),
            sparse=True,
            layer_report=False,
        )
    assert not (tmp_path / "int8_sparse.tflite").exists()


def test_inspect_counts_macs_per_op_like_the_profiler(tiny_model, exported):
    info = inspect_tflite(exported["int8"].path)
    assert info.macs == profile(tiny_model).macs > 0
    assert {op.op for op in info.ops if op.macs} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    proc = run_cli("inspect", exported["int8"].path, "--tensors")
    assert proc.returncode == 0 and "MACs" in proc.stdout and "quant bytes" in proc.stdout


def test_cli_mode_errors_are_one_line(tiny_keras_path, tmp_path):
    out = tmp_path / "m.tflite"
    assert_clean_error(
        run_cli("export", tiny_keras_path, "--quant", "float16", "--io", "uint8", "-o", out),
        contains="--io uint8 does not apply to float16",
    )
    assert_clean_error(
        run_cli("export", tiny_keras_path, "--quant", "int16x8", "-o", out), contains="--quant int16x8 needs --data"
    )
    assert_clean_error(
        run_cli("export", tiny_keras_path, "--quant", "dynamic", "--keep-float", "auto", "-o", out),
        contains="--keep-float applies to --quant int8",
    )
    assert not out.exists()
