"""The public API as a Keras user would guess it: the README's Python examples run as written,
the packages are reachable after ``import edgekit``, data arguments are named as in Keras (the old
names still work for one release, with a warning), contradictory arguments are errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, cwd, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_the_packages_are_reachable_after_import_edgekit_and_cost_no_tensorflow(tmp_path):
    out = _python(
        "import sys, edgekit\n"
        "assert 'tensorflow' not in sys.modules, 'import edgekit imported TensorFlow'\n"
        "print(edgekit.optimize.prune.__module__, edgekit.models.create.__module__, edgekit.search.search.__module__,\n"
        "      edgekit.converters.export.__module__, edgekit.device.bench.__module__)\n",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "edgekit.optimize.prune",
        "edgekit.models.registry",
        "edgekit.app.search",
        "edgekit.converters.export",
        "edgekit.device.host.runner",
    ]


def test_the_readmes_python_examples_run_as_written(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        out = _python(code, tmp_path)
        assert out.returncode == 0, f"{code}\n---\n{out.stderr[-3000:]}"
    # the first example wrote and benchmarked its file, and printed the pruning's widths
    assert (tmp_path / "model_int8.tflite").is_file()
    assert "p50" in out.stdout and "channel prune" in out.stdout and "width before" in out.stdout


@pytest.fixture
def small(tiny_model, digits_ds):
    return tiny_model, digits_ds.x_train[:64], digits_ds.x_test[:40], digits_ds.y_test[:40]


def test_old_data_names_still_work_with_a_warning(small, tmp_path):
    from edgekit import export
    from edgekit.core.errors import EdgekitDeprecationWarning

    model, x, xt, yt = small
    new = export(model, None, "float32", validation_data=(xt, yt), layer_report=False)
    with pytest.warns(EdgekitDeprecationWarning, match="`eval_x`, `eval_y` are now `validation_data`"):
        old = export(model, None, "float32", eval_x=xt, eval_y=yt, layer_report=False)
    assert (old.accuracy, old.agreement, old.verify_samples) == (new.accuracy, new.agreement, new.verify_samples)
    with pytest.warns(EdgekitDeprecationWarning, match="`calib` is now `calibration`"):
        int8 = export(model, None, "int8", calib=x, calib_samples=32, layer_report=False)
    assert int8.calib_samples == 32 and int8.fully_integer


def test_the_new_and_the_old_name_at_once_is_an_error(small):
    from edgekit import InputError, export

    model, x, xt, yt = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="give `calibration` or its older name `calib`, not both"):
            export(model, None, "int8", calibration=x, calib=x)


def test_contradictory_export_arguments_are_an_error(small):
    from edgekit import ExportOptions, InputError, export

    model, x, *_ = small
    with pytest.raises(InputError, match=r"give `options` or its fields \(quant\), not both"):
        export(model, None, "float16", options=ExportOptions(quant="float32"))
    with pytest.raises(InputError, match=r"give `options` or its fields \(seed\), not both"):
        export(model, None, options=ExportOptions(quant="float32"), seed=3)


def test_bench_takes_one_path_or_a_list(exported):
    import edgekit

    (one,) = edgekit.bench(exported["int8"].path, runs=3, warmup=1)
    assert one.ok and one.model == exported["int8"].path
    assert [r.model for r in edgekit.bench([exported["int8"].path], runs=3, warmup=1)] == [exported["int8"].path]


def test_the_cli_and_the_library_share_the_sanity_gates_default():
    from edgekit.app.cli.export import MIN_COSINE as cli_default
    from edgekit.converters.export import MIN_COSINE, ExportOptions

    assert cli_default == MIN_COSINE == ExportOptions().min_cosine


def test_optimize_takes_validation_data_and_reports_on_it(small):
    from edgekit.optimize import FineTune, PruneConfig, Recipe, optimize

    model, x, xt, yt = small
    recipe = Recipe.of([PruneConfig(sparsity=0.5)], FineTune(epochs=1, batch_size=32))
    result = optimize(model, recipe, x, np.zeros(len(x), np.int64), validation_data=(xt, yt))
    top = model.predict(xt, verbose=0).argmax(-1)
    assert result.baseline_accuracy == pytest.approx(float(np.mean(top == yt)), abs=1e-12)
