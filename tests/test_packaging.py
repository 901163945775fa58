"""Installation layout and lean imports, checked in fresh interpreters."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, cwd, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


LOADED = "import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


@pytest.mark.parametrize(
    "stmt",
    [
        "import edgekit.device",
        "import edgekit",
        "import edgekit.converters.inspection",
        "import edgekit.app.cli; edgekit.app.cli.build_parser()",
    ],
)
def test_lean_imports_do_not_load_tensorflow(stmt, tmp_path):
    out = _python(f"{stmt}\n{LOADED}", tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"tensorflow", "tf_keras", "keras"}, loaded


def test_users_own_modules_are_never_shadowed(tmp_path):
    for name in ("models", "converters", "device"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was imported')\n")
    out = _python(
        "import edgekit.device, edgekit.converters, edgekit.models\nprint(edgekit.models.mobilenet_v2.__module__)",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "edgekit.models.mobilenet_v2"


def test_regular_install_maps_the_top_level_folders(tmp_path):
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            ROOT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    # every source file of the tree is installed, each top-level folder under its edgekit.* name
    for top, installed in (
        ("edgekit", "edgekit"),
        ("models", "edgekit/models"),
        ("optimize", "edgekit/optimize"),
        ("converters", "edgekit/converters"),
        ("device", "edgekit/device"),
    ):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, top))
                    assert (target / installed / rel).is_file(), f"{top}/{rel} is not installed"
    env = dict(os.environ, PYTHONPATH=str(target))
    out = _python(
        "import edgekit, edgekit.models, edgekit.device, edgekit.converters\nprint(edgekit.models.__file__)",
        tmp_path,
        env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target))
