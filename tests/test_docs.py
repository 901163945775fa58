"""The documentation runs as written: the README's Python example, end to end, in a fresh process."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_the_readme_python_example_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    example = next(b for b in blocks if b.startswith("import keras"))
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fully integer: yes" in proc.stdout and "p50" in proc.stdout
    assert (tmp_path / "model_int8.tflite").is_file()
