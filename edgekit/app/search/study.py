"""The study: Optuna's storage (a journal file in the search directory, or a shared database), the
check that a study belongs to this model, data and space, and the trial slots that keep the total at
exactly ``trials`` however many workers share it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import warnings
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from edgekit.app.search import space as searchspace
from edgekit.core.errors import InputError

SAMPLERS = ("tpe", "nsga2", "random")

if TYPE_CHECKING:
    from edgekit.app.search import Limits


def model_fingerprint(model) -> str:
    """The model's architecture and weights, however it was loaded."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(ds) -> str:
    h = hashlib.sha256()
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def open_study(
    directory: str,
    storage: Optional[str],
    name: str,
    sampler: str,
    seed: int,
    constraints,
    heartbeat: float = 30.0,
    trials: int = 24,
    maximize_quality: bool = True,
):
    """Optuna's study ``name`` in ``storage`` (default: ``directory/study.log``), created when new:
    quality maximized (accuracy) or minimized (an error: MAE), p50 latency and size minimized."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported by edgekit, in one line
    # multivariate TPE and constraints are "experimental" in Optuna 4 (stable in use since 3.0)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if storage is None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        store = JournalStorage(JournalFileBackend(os.path.join(directory, "study.log")))
    elif storage.startswith(("postgresql://", "postgresql+psycopg2://", "sqlite:///")):
        store = _rdb(storage, heartbeat)
    else:
        raise InputError(
            "{storage} must be a postgresql://user@host/database URL (or sqlite:///file.db); received {value!r}",
            params="storage",
            value=storage,
        )
    if sampler not in SAMPLERS:
        raise InputError(
            "{sampler} must be one of {choices}; received {value!r}",
            params="sampler",
            value=sampler,
            choices=", ".join(SAMPLERS),
        )
    if sampler == "tpe":
        # random trials first: a third of the budget, 4 to 10 (Optuna's default is 10 of any budget)
        chooser = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(4, min(10, trials // 3)), multivariate=True, constraints_func=constraints
        )
    elif sampler == "nsga2":
        chooser = optuna.samplers.NSGAIISampler(seed=seed, population_size=8, constraints_func=constraints)
    else:
        chooser = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(
        study_name=name,
        storage=store,
        sampler=chooser,
        load_if_exists=True,
        directions=["maximize" if maximize_quality else "minimize", "minimize", "minimize"],
    )


# The PostgreSQL advisory lock edgekit's workers take while one of them opens (and maybe creates)
# a shared study: Optuna creates its tables on first use without a lock, and two workers starting at
# the same moment on a fresh database race (one dies with 'duplicate key value violates unique
# constraint "pg_type_typname_nsp_index"').
STUDY_LOCK = 0x6564_6765  # "edge"


@contextlib.contextmanager
def opening(storage: Optional[str]):
    """While the block opens the study: the workers of one PostgreSQL database one at a time
    (an advisory lock, held until the block ends or its connection closes); nothing for a file."""
    if storage is None or not storage.startswith(("postgresql://", "postgresql+psycopg2://")):
        yield
        return
    import sqlalchemy

    url = "postgresql+psycopg2://" + storage.split("://", 1)[1]
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10}, poolclass=sqlalchemy.pool.NullPool)
        conn = engine.connect()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise InputError(f"cannot open the study database {public_url(url)}: {reason}") from None
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": STUDY_LOCK})
        yield
    finally:
        conn.close()  # the lock is the session's: closing releases it
        engine.dispose()


def public_url(url: str) -> str:
    """A storage URL without its user and password: host, port and database."""
    return url.split("@")[-1]


def _rdb(url: str, heartbeat: float):
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    shown = public_url(url)
    try:
        return RDBStorage(
            url,
            heartbeat_interval=max(1, int(heartbeat)),
            grace_period=max(4, int(4 * heartbeat)),
            engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
            if url.startswith("postgresql")
            else {},
        )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise InputError(f"cannot open the study database {shown}: {reason}") from None


def check_identity(study, model_id: str, data_id: str, space: dict) -> None:
    """The study was made for this model, data and space (or is new: then it is marked so)."""
    attrs = study.user_attrs
    mine = {"model": model_id, "data": data_id, "space": searchspace.fingerprint(space)}
    if not attrs.get("edgekit"):
        for k, v in mine.items():
            study.set_user_attr(k, v)
        study.set_user_attr("edgekit", 1)
        return
    hint = {
        "model": "another model",
        "data": "another data set",
        "space": "another search space (continue it with the same --space file)",
    }
    for k, v in mine.items():
        if attrs.get(k) != v:
            raise InputError(
                f"study {study.study_name!r} was created for {hint[k]}; for this one give a new -o DIR "
                f"(or --study NAME); the existing study is left as it is"
            )


def constraints_of(limits: Limits, baseline: Callable[[], Optional[dict]]):
    """Optuna's ``constraints_func``: each limit's excess from the trial's stored measurements."""

    def func(frozen) -> Sequence[float]:
        m = frozen.user_attrs.get("measured")
        base = baseline()
        if not m or not base:
            return [1.0]
        return list(limits.violations(m, base).values()) or [0.0]

    return func


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead(study, shared: bool) -> None:
    """Running trials whose worker is gone: stale heartbeats in a ``shared`` database, or, in the
    journal file, a worker process on this machine that no longer exists."""
    import optuna
    from optuna.trial import TrialState

    if shared:
        optuna.storages.fail_stale_trials(study)
        return
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get("worker", ""))
        if who.rpartition(":")[0] == host and not _alive(int(who.rpartition(":")[2] or 0)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def next_slot(study, trials: int, poll: float, shared: bool) -> bool:
    """Wait while the last trials run elsewhere; False once ``trials`` are complete."""
    from optuna.trial import TrialState

    while True:
        fail_dead(study, shared)
        states = [t.state for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))]
        done = states.count(TrialState.COMPLETE)
        if done >= trials:
            return False
        if done + states.count(TrialState.RUNNING) < trials:
            return True
        time.sleep(poll)


def is_surplus(study, trial, trials: int) -> bool:
    """True when ``trials`` trials numbered before this one are complete or running."""
    from optuna.trial import TrialState

    before = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if t.number < trial.number
    ]
    return len(before) >= trials
