"""edgekit search: the space, a study on this machine (interrupted and continued), limits, bad
input, and a study shared by two workers through a real PostgreSQL server, one killed mid-trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import EDGEKIT, assert_clean_error, build_tiny, interactive, run_cli

from edgekit.core.errors import InputError

SPACE = (
    "channel_ratio = [0.0, 0.25, 0.5]\nsparsity = [0.0]\nclusters = [0]\nqat = [false, true]\ndistill = false\n"
    "epochs = 1\n"
)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.toml"
    path.write_text(SPACE)
    return str(path)


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"sparsity": []}, "sparsity is an empty list"),
        ({"channel_ratio": {"low": 0.6, "high": 0.2}}, "low 0.6 is above high 0.2"),
        ({"widht": [0.5]}, "unknown dimension 'widht'"),
        ({"qat": [True], "quant": ["int16x8"]}, "qat = true exports int8 only"),
        ({"qat": {"low": 0, "high": 1}}, "qat is a choice, not a range"),
        ({"sparsity": [0.5, 1.5]}, "1.5 is not a share in [0, 1)"),
        ({"clusters": [1]}, "0 (none) or a count from 2 to 256"),
    ],
)
def test_space_errors_say_what_is_wrong(doc, words):
    from edgekit.app.search.space import load_space

    with pytest.raises(InputError, match=r".*") as exc:
        load_space(overrides=doc)
    assert words in str(exc.value)


def test_a_trials_recipe_is_one_edgekit_optimize_reads():
    from edgekit.app.search.space import DEFAULT_SPACE, describe, recipe_doc
    from edgekit.optimize import Recipe

    params = {
        "channel_ratio": 0.45,
        "stages": 1,
        "sparsity": 0.5,
        "clusters": 16,
        "qat": True,
        "quant": "int8",
        "distill": True,
        "epochs": 6,
        "learning_rate": 0.00123456,
    }
    doc = recipe_doc(params, batchnorm=True)
    recipe = Recipe.from_dict(doc)
    assert [s.technique for s in recipe.steps] == ["channel_prune", "prune", "cluster", "qat"]
    assert recipe.steps[0].fine_tune.epochs == 6 and recipe.steps[0].fine_tune.distill is not None
    assert recipe.steps[0].fine_tune.learning_rate == 0.00123
    assert recipe.steps[3].fine_tune.epochs == 2 and recipe.steps[3].fine_tune.learning_rate == 1e-4
    assert recipe.steps[2].config.fold_batchnorm is False  # PCQAT keeps BatchNorm
    assert describe(params) == "channels 0.45 + prune 0.5 + cluster 16 + QAT + distill + int8"
    nothing = dict(params, channel_ratio=0.0, sparsity=0.0, clusters=0, qat=False)
    assert recipe_doc(nothing, True) is None and describe(nothing) == "int8"
    assert set(DEFAULT_SPACE) == set(params)
    staged = dict(nothing, channel_ratio=[0.1, 0.3, 0.654321], stages=3)
    step = Recipe.from_dict(recipe_doc(staged, True)).steps[0]
    assert step.technique == "channel_prune" and step.config.stages == (0.1, 0.3, 0.6543)
    assert describe(staged) == "channels 0.10/0.30/0.65 + distill + int8"


def test_stages_draw_one_ratio_per_stage_and_the_hand_made_points_follow():
    import optuna

    from edgekit.app.search.space import hand_made, load_space, suggest

    space = load_space(overrides={"stages": [3]})
    trial = optuna.create_study().ask()
    params = suggest(trial, space)
    assert params["stages"] == 3 and len(params["channel_ratio"]) == 3
    assert sorted(trial.params) == sorted(
        ["stages", "channel_ratio_1", "channel_ratio_2", "channel_ratio_3"]
        + [k for k in space if k not in ("stages", "channel_ratio")]
    )
    channels = hand_made(space)["channels 0.5"]
    assert channels["stages"] == 3 and [channels[f"channel_ratio_{i}"] for i in (1, 2, 3)] == [0.5] * 3
    assert hand_made(load_space())["channels 0.5"]["channel_ratio"] == 0.5  # [1, 3]: the single stage


def test_a_recipe_written_as_toml_reads_back_the_same(tmp_path):
    from edgekit.app.search.space import recipe_doc, to_toml
    from edgekit.core.io import read_toml

    doc = recipe_doc(
        {
            "channel_ratio": 0.45,
            "stages": 1,
            "sparsity": 0.5,
            "clusters": 16,
            "qat": True,
            "quant": "int8",
            "distill": True,
            "epochs": 6,
            "learning_rate": 0.00123456,
        },
        batchnorm=True,
    )
    path = tmp_path / "r.toml"
    path.write_text(to_toml(doc, "a header"))
    assert read_toml(str(path), "recipe") == doc


def _trials(directory):
    with open(os.path.join(directory, "search.json")) as f:
        return json.load(f)


def test_search_interrupted_then_continued_writes_the_front(tmp_path, tiny_keras_path, space):
    """Ctrl-C in the second trial: exit 130, that trial failed; the same command finishes the
    study; every front point has a recipe that reproduces it and its verified .tflite."""
    out = str(tmp_path / "study")
    argv = [
        EDGEKIT,
        "search",
        tiny_keras_path,
        "--data",
        "digits",
        "-o",
        out,
        "--trials",
        "3",
        "--space",
        space,
        "--runs",
        "10",
        "--warmup",
        "2",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interactive)
    for line in proc.stdout:
        if line.startswith("trial 0:"):
            time.sleep(1.5)  # inside trial 1 (a fine-tune or an export takes seconds)
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    first = _trials(out)
    assert [t["state"] for t in first["trials"]][:2] == ["COMPLETE", "FAIL"]

    done = run_cli(*argv[1:])
    assert done.returncode == 0, done.stderr
    assert "Pareto front" in done.stdout
    result = _trials(out)
    complete = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 3
    assert complete[0] == first["trials"][0]  # kept as measured
    assert result["front"] and os.path.isfile(os.path.join(out, "pareto.png"))
    from edgekit.converters import inspect_tflite
    from edgekit.optimize import Recipe

    for n in result["front"]:
        t = next(t for t in result["trials"] if t["number"] == n)
        tflite = os.path.join(out, "front", f"trial_{n:03d}.tflite")
        assert os.path.getsize(tflite) == t["size_bytes"]
        assert inspect_tflite(tflite).fully_integer
        toml = os.path.join(out, "front", f"trial_{n:03d}.toml")
        if t["recipe"] is not None:
            assert Recipe.from_toml(toml) == Recipe.from_dict(t["recipe"])
    # no limit can be met: one line naming it and the best value seen; the study is kept
    before = open(os.path.join(out, "study.log"), "rb").read()
    tight = run_cli(*argv[1:], "--max-size", "0.001")
    assert_clean_error(tight, 2, "meets --max-size 0.001 (the smallest seen:")
    # a study made for another model: refused, nothing lost
    other = tmp_path / "other.keras"
    build_tiny().save(str(other))
    wrong = run_cli("search", str(other), "--data", "digits", "-o", out, "--trials", "4", "--space", space)
    assert_clean_error(wrong, 2, "was created for another model")
    assert open(os.path.join(out, "study.log"), "rb").read()[: len(before)] == before


def test_search_bad_input_is_one_line(tmp_path, tiny_keras_path, space):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = run_cli("search", tiny_keras_path, "--data", "digits", "-o", str(busy))
    assert_clean_error(r, 2, "holds files a search does not write")
    assert (busy / "notes.txt").read_text() == "mine"
    r = run_cli("search", tiny_keras_path, "--data", "digits", "-o", str(tmp_path / "b"), "--storage", "redis://x")
    assert_clean_error(r, 2, "--storage must be a postgresql://")
    r = run_cli(
        "search",
        tiny_keras_path,
        "--data",
        "digits",
        "-o",
        str(tmp_path / "d"),
        "--space",
        space,
        "--host",
        "nobody@127.0.0.1:1",
    )
    assert_clean_error(r, 2, "cannot reach nobody@127.0.0.1:1 over SSH")
    assert not os.path.exists(tmp_path / "d")
    empty = tmp_path / "empty.toml"
    empty.write_text("qat = []\n")
    r = run_cli("search", tiny_keras_path, "--data", "digits", "-o", str(tmp_path / "c"), "--space", str(empty))
    assert_clean_error(r, 2, "qat is an empty list")
    assert not os.path.exists(tmp_path / "c")


def test_search_bad_storage_leaves_nothing(tmp_path, tiny_keras_path, space):
    r = run_cli(
        "search",
        tiny_keras_path,
        "--data",
        "digits",
        "-o",
        str(tmp_path / "a"),
        "--space",
        space,
        "--storage",
        "postgresql://nobody@127.0.0.1:1/none",
    )
    assert_clean_error(r, 2, "cannot open the study database 127.0.0.1:1/none")
    assert not os.path.exists(tmp_path / "a")


def _postgres_or_skip():
    from postgres import bin_dir  # tools/postgres.py

    if bin_dir() is None:
        if os.environ.get("EDGEKIT_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required here (EDGEKIT_REQUIRE_POSTGRES=1) but initdb was not found")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")


def test_shared_study_two_workers_one_killed_mid_trial(tmp_path, tiny_keras_path, space):
    """Two workers share one study in a real PostgreSQL server; one is killed with SIGKILL in the
    middle of a trial: that trial is failed (its heartbeat stopped), the other worker finishes,
    exactly --trials trials complete and none ran twice."""
    _postgres_or_skip()
    import optuna
    from optuna.trial import TrialState
    from postgres import LocalPostgres

    with LocalPostgres() as pg:
        argv = [
            EDGEKIT,
            "search",
            tiny_keras_path,
            "--data",
            "digits",
            "--trials",
            "4",
            "--space",
            space,
            "--storage",
            pg.url,
            "--heartbeat",
            "1",
            "--runs",
            "10",
            "--warmup",
            "2",
        ]
        a = subprocess.Popen(
            argv + ["-o", str(tmp_path / "a")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        b = subprocess.Popen(
            argv + ["-o", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        storage = optuna.storages.RDBStorage(pg.url.replace("postgresql://", "postgresql+psycopg2://"))
        killed = None
        deadline = time.time() + 240
        while killed is None and time.time() < deadline and a.poll() is None:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="edgekit-search", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("worker", "").endswith(f":{a.pid}") and "name" in t.user_attrs:
                    time.sleep(1.0)  # well inside the trial's fine-tune or export
                    a.kill()
                    killed = t.number
                    break
        assert killed is not None, "worker a never ran a trial"
        a.wait(timeout=30)
        out, err = b.communicate(timeout=600)
        assert b.returncode == 0, err
        trials = optuna.load_study(study_name="edgekit-search", storage=storage).get_trials()
    states = {t.number: t.state for t in trials if not t.user_attrs.get("surplus")}
    assert states[killed] == TrialState.FAIL
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 4
    assert TrialState.RUNNING not in states.values()
    workers = [t.user_attrs.get("worker") for t in trials if t.state == TrialState.COMPLETE]
    assert len(workers) == 4 and all(workers)  # each complete trial run by exactly one worker
    assert "Pareto front" in out


def test_workers_opening_a_fresh_shared_study_at_the_same_moment():
    """Two workers open one study on a fresh database at the same instant (a barrier; Optuna
    creates its tables without a lock: measured 6 races in 6 without edgekit's lock), five times:
    one creates the study, the other loads it, no error."""
    _postgres_or_skip()
    import threading

    from postgres import LocalPostgres

    from edgekit.app.search.study import open_study, opening

    outcomes = []
    with LocalPostgres() as pg:
        for rep in range(5):
            url, barrier = pg.fresh_database(f"fresh{rep}"), threading.Barrier(2)

            def worker(url=url, barrier=barrier):
                barrier.wait()
                try:
                    with opening(url):
                        study = open_study("unused", url, "edgekit-search", "random", 0, None, 30.0, 4)
                    outcomes.append(study.study_name)
                except Exception as exc:  # the race, if it happened
                    outcomes.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
    assert outcomes == ["edgekit-search"] * 10, outcomes


def test_hand_made_recipes_come_first_and_a_collapsed_trial_never_reaches_the_front(tmp_path, digits_ds):
    """A new study's first trials are the demo's hand-made recipes that lie in its space; a trial
    whose fine-tune collapses the model (90% pruned, Adam at 0.5) fails with that reason, is not
    counted as complete and is kept off the front."""
    from edgekit import keras
    from edgekit.app.search import Target, search
    from edgekit.app.search.space import hand_made, load_space

    keras.utils.set_random_seed(0)
    L = keras.layers
    i = keras.Input((32, 32, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(i)
    m = keras.Model(i, L.Dense(10, activation="softmax")(L.Dense(32, activation="relu")(L.Flatten()(x))))
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(digits_ds.x_train, digits_ds.y_train, epochs=2, batch_size=32, verbose=0)
    space = {
        "channel_ratio": [0.0],
        "sparsity": [0.0, 0.9],
        "clusters": [0],
        "qat": [False, True],
        "distill": False,
        "epochs": 1,
        "learning_rate": 0.5,
    }
    assert list(hand_made(load_space(overrides=space))) == ["int8", "QAT int8"]
    ds = digits_ds
    result = search(
        m,
        ds.x_train[:512],
        ds.y_train[:512],
        validation_data=(ds.x_test, ds.y_test),
        directory=str(tmp_path / "s"),
        trials=4,
        space=space,
        sampler="random",
        seed=3,
        target=Target(runs=5, warmup=1),
        log=None,
    )
    trials = list(result.trials)
    assert [t["hand_made"] for t in trials[:2]] == ["int8", "QAT int8"]
    assert trials[0]["name"] == "int8" and trials[1]["name"] == "QAT + int8"
    collapsed = [t for t in trials if t["collapsed"]]
    assert collapsed, [(t["name"], t["state"]) for t in trials]  # seed 3 draws a 90% prune
    for t in trials:
        pruned = t["params"]["sparsity"] == 0.9
        assert t["collapsed"] == pruned and (t["state"] == "FAIL") == pruned
        if pruned:
            assert "collapsed the model" in t["error"] and t["number"] not in result.front
    assert sum(t["state"] == "COMPLETE" for t in trials) == 4 and result.front
    assert result.baseline["chance"] == pytest.approx(np.bincount(ds.y_test).max() / len(ds.y_test))
    assert "chance" in result.summary() and "collapsed the model" in result.summary()
