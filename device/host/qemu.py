"""ARM64 under QEMU user-mode emulation: the board's code path (aarch64 Python, numpy, LiteRT with
XNNPACK's ARM kernels) on this x86 machine, as a Raspberry Pi 4 (``cortex-a72``) or Pi 5
(``cortex-a76``).

:func:`ensure` prepares, once, in a cache directory (``$EDGEKIT_ARM_CACHE``, default
``~/.cache/edgekit/arm64``; about 300 MB a version), with no system install, one tree per
version of ai-edge-litert and numpy (``litert-2.3.0-numpy-2.4.6/``):

- ``qemu-aarch64`` 10 from Debian trixie's ``qemu-user`` package (static). Bookworm's qemu 7.2
  segfaults inside LiteRT, and any QEMU with its default ``-cpu max`` gives wrong int8 results
  (mis-emulated SME kernels): a Pi CPU is always named.
- an arm64 sysroot of Debian's python3.11 and libstdc++6 with their dependencies, fetched with
  ``apt-get`` against a private apt root (the mirror comes from this machine's apt sources);
- aarch64 wheels of numpy and ai-edge-litert, the same ai-edge-litert version as this machine's
  (``pip download`` needs the manylinux_2_27/2_28 tags, or it silently picks 1.4.0).

A tree is prepared under a temporary name (``.prep-*``) by one process at a time (a file lock,
``.lock``: every other preparer, process or thread, waits, then uses that tree) and renamed into
place whole; once there it is never replaced or removed (runs only add Python's bytecode caches),
so a run under QEMU never loses its files to another preparer. (Measured before: two ``edgekit
bench --qemu`` preparing one fresh cache at once both replaced ``sysroot/`` and ``site/``, and
the first one's harness failed with ``No module named 'json'``, ``no numpy`` or Python's
"failed to get the Python codec of the filesystem encoding".) The single tree of the earlier
layout (``sysroot/``, ``site/``, ``bin/`` beside ``ready.json``) is adopted by hard links when
its versions match. Trees of older versions stay until removed by hand.

:func:`python_argv` is the command prefix that runs the aarch64 python; ``edgekit bench --qemu
cortex-a72`` uses it. :func:`check` (``make arm-check``, ``python -m edgekit.app.cli.arm_check``) runs
models under both CPUs and on this machine on the same inputs and compares the raw outputs: int8
must be bit-identical.

Emulated timings mean nothing for a real board; outputs and memory behaviour do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from edgekit.core.errors import HarnessError
from edgekit.device.board.harness import HARNESS_PATH

CPUS = ("cortex-a72", "cortex-a76")
BOARDS = {"cortex-a72": "Raspberry Pi 4", "cortex-a76": "Raspberry Pi 5"}
PYTHON = "python3.11"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def cache_dir() -> str:
    return os.environ.get("EDGEKIT_ARM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgekit", "arm64")


def _paths(tree: str) -> Dict[str, str]:
    return {
        "dir": tree,
        "qemu": os.path.join(tree, "bin", "qemu-aarch64"),
        "sysroot": os.path.join(tree, "sysroot"),
        "site": os.path.join(tree, "site"),
        "stamp": os.path.join(tree, "ready.json"),
    }


def _ready(p: Dict[str, str], versions: Dict[str, str]) -> bool:
    try:
        with open(p["stamp"]) as f:
            return json.load(f) == versions
    except (OSError, ValueError):
        return False


def _mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    texts = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            with open(path) as f:
                texts.append(f.read())
        except OSError:
            pass
    for uri in re.findall(r"(?m)^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", "\n".join(texts)):
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise HarnessError("no Debian mirror in /etc/apt/sources*: the ARM64 check needs apt's package mirror")


def _run(cmd: Sequence[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
        raise HarnessError(f"{what} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc


def _apt(root: str, line: str, arch: Optional[str], args: Sequence[str]) -> None:
    """apt-get on a private apt root under ``root`` (never the system's state)."""
    for d in (
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    status = os.path.join(root, "var/lib/dpkg/status")
    open(status, "a").close()
    sources = os.path.join(root, "etc/apt/sources.list")
    with open(sources, "w") as f:
        f.write(line + "\n")
    opts = [
        f"Dir={root}",
        f"Dir::State::status={status}",
        f"Dir::Etc::SourceList={sources}",
        "Dir::Etc::SourceParts=-",
        f"Dir::Etc::Parts={root}/etc/apt/apt.conf.d",
        "Dir::Etc::Preferences=-",
        f"Dir::Etc::PreferencesParts={root}/etc/apt/preferences.d",
        "Debug::NoLocking=1",
        "APT::Sandbox::User=root",
    ]
    if arch:
        opts += [f"APT::Architecture={arch}", f"APT::Architectures::={arch}"]
    base = ["apt-get", "-qq"] + [x for o in opts for x in ("-o", o)]
    _run(base + ["update"], "apt-get update (private root)")
    _run(base + list(args), f"apt-get {args[0]}", cwd=root)


def _extract(deb: str, dest: str) -> None:
    _run(["dpkg-deb", "-x", deb, dest], f"unpacking {os.path.basename(deb)}")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        raise HarnessError(f"{dist} is not installed here; install edgekit first") from None


def ensure(root: Optional[str] = None, log=None) -> Dict[str, str]:
    """Prepare QEMU, the arm64 sysroot and the aarch64 wheels once; return their paths.

    Safe to call from several processes and threads at once: one prepares (under ``root``'s
    lock), the others wait for it; the tree returned is never replaced or removed afterwards."""
    root = root or cache_dir()
    versions = {"litert": _version("ai-edge-litert"), "numpy": _version("numpy")}
    p = _paths(os.path.join(root, f"litert-{versions['litert']}-numpy-{versions['numpy']}"))
    if _ready(p, versions):
        return p
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    os.makedirs(root, exist_ok=True)
    with _locked(os.path.join(root, ".lock"), lambda: log(f"arm64: waiting for another preparation in {root} ...")):
        if _ready(p, versions):  # prepared by the one this call waited for
            return p
        for stale in glob.glob(os.path.join(root, ".prep-*")):  # of a preparer that died (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if os.path.lexists(p["dir"]):  # not ready (no stamp): never renamed into place by ensure
            aside = tempfile.mkdtemp(prefix=".prep-stale-", dir=root)
            os.rename(p["dir"], os.path.join(aside, "tree"))
            shutil.rmtree(aside, ignore_errors=True)
        work = tempfile.mkdtemp(prefix=".prep-", dir=root)
        try:
            if not _adopt(root, _paths(work), versions):
                _download(work, _paths(work), versions, log)
            with open(_paths(work)["stamp"], "w") as f:
                json.dump(versions, f)
            os.chmod(work, 0o755)  # mkdtemp's 0700 otherwise
            os.rename(work, p["dir"])  # whole and at once: a tree in place is complete
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"arm64: ready in {p['dir']}")
    return p


@contextlib.contextmanager
def _locked(path: str, on_wait):
    """An exclusive ``flock`` on ``path``: it excludes other processes and, opened once per call,
    other threads of this one (a POSIX ``lockf`` lock would not); released if the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _adopt(root: str, new: Dict[str, str], versions: Dict[str, str]) -> bool:
    """The earlier layout's single tree (``root``'s ``sysroot/``, ``site/``, ``bin/`` and
    ``ready.json``), when it has these versions: hard-linked into ``new`` (no copy, no download;
    the old tree stays for the earlier code, which replaces it in place)."""
    old = _paths(root)
    if not _ready(old, versions) or not all(os.path.exists(old[k]) for k in ("qemu", "sysroot", "site")):
        return False
    try:
        os.makedirs(os.path.dirname(new["qemu"]))
        os.link(old["qemu"], new["qemu"])
        for name in ("sysroot", "site"):
            shutil.copytree(old[name], new[name], symlinks=True, copy_function=os.link)
    except OSError:  # no hard links here, or the old tree changed meanwhile: download instead
        for name in ("bin", "sysroot", "site"):
            shutil.rmtree(os.path.join(new["dir"], name), ignore_errors=True)
        return False
    return _ready(old, versions)


def _download(work: str, p: Dict[str, str], versions: Dict[str, str], log) -> None:
    """Fetch and unpack everything into the tree ``p`` (inside ``work``)."""
    litert, numpy = versions["litert"], versions["numpy"]
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise HarnessError("the ARM64 check needs apt-get and dpkg-deb (a Debian or Ubuntu machine)")
    mirror = _mirror()
    log("arm64: fetching qemu-user 10 from Debian trixie ...")
    _apt(
        os.path.join(work, "host"),
        f"deb [signed-by={KEYRING}] {mirror} trixie main",
        None,
        ["download", "qemu-user"],
    )
    (deb,) = glob.glob(os.path.join(work, "host", "qemu-user_*.deb"))
    _extract(deb, os.path.join(work, "qemu"))
    os.makedirs(os.path.dirname(p["qemu"]), exist_ok=True)
    shutil.move(os.path.join(work, "qemu", "usr/bin/qemu-aarch64"), p["qemu"])

    log("arm64: fetching Debian bookworm's arm64 python3.11 sysroot ...")
    arm = os.path.join(work, "arm")
    _apt(
        arm,
        f"deb [arch=arm64 signed-by={KEYRING}] {mirror} bookworm main",
        "arm64",
        ["install", "-y", "--download-only", PYTHON, "libstdc++6"],
    )
    for deb in sorted(glob.glob(os.path.join(arm, "var/cache/apt/archives/*.deb"))):
        _extract(deb, p["sysroot"])

    log(f"arm64: fetching aarch64 wheels of numpy {numpy} and ai-edge-litert {litert} ...")
    wheels = os.path.join(work, "wheels")
    plat = [
        x
        for t in (
            "manylinux_2_28_aarch64",
            "manylinux_2_27_aarch64",
            "manylinux2014_aarch64",
            "manylinux_2_17_aarch64",
        )
        for x in ("--platform", t)
    ]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    target = ["--only-binary=:all:", "--no-deps", "--python-version", "3.11", "--implementation", "cp", *plat]
    _run(
        pip + ["download", *target, "-d", wheels, f"numpy=={numpy}", f"ai-edge-litert=={litert}"],
        "pip download (aarch64 wheels)",
    )
    _run(
        pip
        + ["install", *target, "--no-index", "--target", p["site"]]
        + sorted(glob.glob(os.path.join(wheels, "*.whl"))),
        "pip install --target (aarch64 wheels)",
    )
    for scratch in ("host", "qemu", "arm", "wheels"):  # only the tree is kept
        shutil.rmtree(os.path.join(work, scratch), ignore_errors=True)


def python_argv(cpu: str, root: Optional[str] = None) -> List[str]:
    """The command prefix running the aarch64 python as ``cpu`` (prepared on first use)."""
    if cpu not in CPUS:
        raise HarnessError(
            "{qemu} CPU {cpu!r} is not a known board CPU; use one of {choices}",
            params="qemu",
            cpu=cpu,
            choices=", ".join(CPUS),
        )
    p = ensure(root)
    return [
        p["qemu"],
        "-L",
        p["sysroot"],
        "-cpu",
        cpu,
        "-E",
        f"PYTHONPATH={p['site']}",
        os.path.join(p["sysroot"], "usr", "bin", PYTHON),
    ]


def raw_outputs(argv_prefix: Sequence[str], model: str, inputs: str, out: str, timeout: float = 1800) -> dict:
    """Run ``harness.py --outputs`` with ``argv_prefix`` (a python command) and load the raw
    output tensors it saved."""
    import numpy as np

    cmd = list(argv_prefix) + [HARNESS_PATH, f"--inputs={inputs}", f"--outputs={out}", "--", model]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or "error" in data:
        err = (
            data.get("error")
            or ([ln for ln in proc.stderr.splitlines() if ln.strip()] or [f"exit {proc.returncode}"])[-1]
        )
        raise HarnessError(f"{model}: {err}")
    with np.load(out) as npz:
        return {"outputs": npz["outputs"], "machine": data.get("machine"), "cpu": data.get("cpu")}


def _compare(a, b) -> dict:
    """Raw outputs ``b`` against ``a``: bit-identical, samples that differ, max |difference|
    (in quantization steps for integer outputs) and top-1 agreement."""
    import numpy as np

    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    identical = a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    return {
        "identical": identical,
        "differing_samples": int((a2 != b2).any(axis=1).sum()),
        "max_abs_diff": float(np.max(np.abs(a2 - b2))) if a.size else 0.0,
        "top1_agreement": float(np.mean(a2.argmax(axis=1) == b2.argmax(axis=1))) if a.size else 1.0,
    }


def check(
    models: Sequence[str], inputs: str, cpus: Sequence[str] = CPUS, samples: int = 64, strict: bool = False
) -> List[dict]:
    """Each model's raw outputs on this machine and under each CPU, on the same ``samples``
    inputs, compared pairwise: each CPU against x86, and the CPUs against each other.

    Integer models must give bit-identical outputs on every ARM CPU. Against x86 they must too
    with ``strict``; otherwise a difference of at most one quantization step with the same top-1
    passes (measured: LiteRT's int8 SOFTMAX rounds differently on ARM on a few percent of the
    inputs of some models; every other tensor is identical). Float models: within 1e-4 of the
    output range."""
    import numpy as np

    argvs = {cpu: python_argv(cpu) for cpu in cpus}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-arm-") as tmp:
        with np.load(inputs) as npz:
            key = "x" if "x" in npz.files else "x_test"
            x = npz[key][:samples]
        sub = os.path.join(tmp, "inputs.npz")
        np.savez(sub, x=x)
        for model in models:
            outs = {"x86_64": raw_outputs([sys.executable], model, sub, os.path.join(tmp, "x86.npz"))}
            for cpu, argv in argvs.items():
                outs[cpu] = raw_outputs(argv, model, sub, os.path.join(tmp, f"{cpu}.npz"))
            pairs = [(cpu, "x86_64") for cpu in cpus] + [(c2, c1) for i, c1 in enumerate(cpus) for c2 in cpus[i + 1 :]]
            for target, ref in pairs:
                a, b = outs[ref]["outputs"], outs[target]["outputs"]
                c = _compare(a, b)
                integer = np.issubdtype(a.dtype, np.integer)
                if not integer:
                    ok = c["max_abs_diff"] <= 1e-4 * (float(np.max(np.abs(a))) or 1.0)
                elif ref != "x86_64" or strict:
                    ok = c["identical"]
                else:
                    ok = c["max_abs_diff"] <= 1 and c["top1_agreement"] == 1.0
                rows.append(
                    {
                        "model": model,
                        "cpu": target,
                        "board": BOARDS[target],
                        "against": ref,
                        "dtype": str(a.dtype),
                        "samples": int(len(x)),
                        **c,
                        "arm_machine": outs[target]["machine"],
                        "ok": bool(ok),
                    }
                )
    return rows
