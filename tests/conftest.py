"""Shared fixtures: a tiny MobileNet-style model trained briefly on digits, and its .tflite files.

Tiny on purpose (a few thousand params, two epochs): tests assert properties of the artifacts,
the demo and benchmarks/ check the accuracy and speed targets on the full-size model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

BIN = os.path.dirname(sys.executable)
# tools/ (the loopback sshd, the README generator) is not part of the installed package
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools"))
EDGEKIT = os.path.join(BIN, "edgekit")


def run_cli(*args, cwd=None, timeout=300):
    """Run the installed `edgekit` command; returns CompletedProcess (text)."""
    env = dict(os.environ)
    env.pop("EDGEKIT_DEBUG", None)
    return subprocess.run([EDGEKIT, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def interactive():
    """A ``preexec_fn`` giving the child the signal state of a command typed in a terminal: SIGINT
    handled and not blocked, whatever the test worker inherited or changed (a child inherits an
    ignored or blocked SIGINT across exec; seen in one pytest-xdist worker)."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def assert_clean_error(proc, expect_code=2, contains=None):
    """A one-line error on stderr, the expected exit code, no traceback."""
    assert proc.returncode == expect_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgekit: error: ")
    if contains:
        assert contains in lines[0], lines[0]


@pytest.fixture(scope="session")
def digits_ds():
    from edgekit.core.data import digits

    return digits()


def build_tiny(input_shape=(32, 32, 1), classes=10):
    from edgekit import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="session")
def tiny_model(digits_ds):
    from edgekit import keras

    keras.utils.set_random_seed(0)
    model = build_tiny()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(digits_ds.x_train, digits_ds.y_train, epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def tiny_keras_path(tiny_model, workdir):
    path = str(workdir / "tiny.keras")
    tiny_model.save(path)
    return path


@pytest.fixture(scope="session")
def exported(tiny_model, digits_ds, workdir):
    """{mode: ExportReport} for float32 and int8 exports of the tiny model."""
    from edgekit.converters import export

    return {
        q: export(
            tiny_model,
            str(workdir / f"tiny_{q}.tflite"),
            q,
            calibration=digits_ds.x_train,
            validation_data=(digits_ds.x_test, digits_ds.y_test),
            calib_samples=64,
        )
        for q in ("float32", "int8")
    }


@pytest.fixture(scope="session")
def test_npz(digits_ds, workdir):
    return digits_ds.save_test_npz(str(workdir / "digits_test.npz"))


@pytest.fixture
def npz(tmp_path):
    """Write arrays to a .npz in tmp_path and return its path."""

    def make(name="data.npz", **arrays):
        path = str(tmp_path / name)
        np.savez(path, **arrays)
        return path

    return make
