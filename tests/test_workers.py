"""Jobs in worker processes (edgekit.app.workers): results in order, log and live lines relayed to
this process, a failing job stops the others, a script without a __main__ guard is safe."""

import io
import os
import subprocess
import sys
import time

import pytest

from edgekit.app.workers import Workers, doing
from edgekit.core.errors import InputError
from edgekit.core.progress import Lines, Relay


def square(x, log=None):
    doing(f"square {x}")
    if log is not None:  # None when the workers are silent
        log(f"squaring {x} in process {os.getpid()}")
    return x * x, os.getpid()


def fail_or_sleep(x, log=None):
    if x == "fail":
        time.sleep(1)
        raise InputError("job failed: bad input")
    time.sleep(120)


def threads(log=None):
    from edgekit.core.compat import tf

    return tf.config.threading.get_intra_op_parallelism_threads()


def test_jobs_run_in_two_processes_with_their_lines_relayed():
    lines = []
    with Workers(2, jobs=4, log=lines.append) as pool:
        assert pool.count == 2
        results = pool.run([(square, (i,)) for i in range(4)] + [(threads, ())])
    assert [r[0] for r in results[:4]] == [0, 1, 4, 9]
    assert os.getpid() not in {r[1] for r in results[:4]}
    assert results[4] == max(1, len(os.sched_getaffinity(0)) // 2)  # each worker's share of the cores
    assert sorted(line.split(" in ")[0] for line in lines) == [f"squaring {i}" for i in range(4)]


def test_silent_workers_still_return_results():
    with Workers(1, log=None) as pool:
        assert pool.run([(square, (3,))])[0][0] == 9


def test_a_failing_job_raises_here_and_stops_the_others():
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="job failed: bad input"):
        with Workers(2, jobs=2, log=lambda _line: None) as pool:
            processes = pool.processes()
            pool.run([(fail_or_sleep, ("sleep",)), (fail_or_sleep, ("fail",))])
    assert time.perf_counter() - t0 < 60
    assert processes and not any(p.is_alive() for p in processes)


def test_relay_sends_the_line_tqdm_draws_and_lines_draws_one_per_slot():
    sent = []
    relay = Relay(lambda slot, text: sent.append((slot, text)), 1, True)
    relay.task = "pruned"
    relay.write("\rfine-tune ████ 10/45   ")
    relay.write("\r          \r")
    assert relay.isatty() and sent == [(1, "pruned: fine-tune ████ 10/45"), (1, "pruned ...")]
    screen = io.StringIO()
    lines = Lines(2, stream=screen)
    lines.show(0, "channels: epoch 3/8")
    lines.show(1, "pruned: epoch 2/6")
    printed = []
    lines.above(printed.append, "[2/4] QAT int8 ...")
    lines.close()
    assert printed == ["[2/4] QAT int8 ..."]
    assert "channels: epoch 3/8" in screen.getvalue() and "pruned: epoch 2/6" in screen.getvalue()


def test_a_script_without_a_main_guard_starts_workers_once(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os\nfrom edgekit.app.workers import Workers\nfrom test_workers import square\n"
        "with Workers(1, log=print) as pool:\n    print(pool.run([(square, (5,))])[0][0])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("squaring 5") == 1 and r.stdout.strip().endswith("25")
