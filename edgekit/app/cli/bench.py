"""``edgekit bench``: latency, start-up and memory of .tflite models, each in a fresh process, here,
on boards over SSH or on ARM64 under QEMU."""

from __future__ import annotations

import json

from edgekit.app.cli._common import EXIT_FAILED, EXIT_OK, add_bench_flags, add_output_flags, check_outputs, err, seconds
from edgekit.core.results import fmt, table
from edgekit.device import ratios
from edgekit.device.board.harness import SCHEMA_VERSION

HELP = "benchmark .tflite models, each in a fresh process, here or on boards"


def add_parser(sub):
    p = sub.add_parser(
        "bench",
        help=HELP,
        description="Measure latency percentiles, start-up and memory of each model "
        "with the LiteRT interpreter, one fresh child process per model: on this machine, on boards over "
        "SSH (--host), or on ARM64 under QEMU (--qemu). Each figure is also given as a ratio to the "
        "first model.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL.tflite")
    g = add_bench_flags(p, sweep=True)
    g.add_argument(
        "--duration",
        type=seconds,
        metavar="SECONDS",
        help="time runs for this many seconds per model instead of --runs",
    )
    g.add_argument(
        "--learn",
        action="store_true",
        help="the models are trainable heads (export --trainable): time --runs train steps (the p50/p90 columns) "
        "beside one inference, start-up and memory; --data's x (and y) are what the steps train on",
    )
    g.add_argument(
        "--no-xnnpack", dest="xnnpack", action="store_false", help="disable LiteRT's default XNNPACK delegate"
    )
    g.add_argument(
        "--data",
        "--inputs",
        dest="data",
        metavar="DATA.npz",
        help=".npz with x (and y: on-device accuracy or MAE), or arrays named after the inputs (and outputs); "
        "default random inputs",
    )
    g = p.add_argument_group("targets")
    g.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="USER@BOARD[:PORT]",
        help="run on this board over SSH (repeat for a fleet, run in parallel)",
    )
    g.add_argument(
        "--remote-python",
        metavar="PATH",
        help="the board's python (default: the venv of 'edgekit device setup', else python3)",
    )
    g.add_argument("--ssh-config", metavar="FILE", help="OpenSSH client config file (ssh -F)")
    g.add_argument(
        "--qemu",
        action="append",
        default=[],
        metavar="CPU",
        choices=("cortex-a72", "cortex-a76"),
        help="run on ARM64 under QEMU user-mode emulation as this CPU (cortex-a72: Pi 4, cortex-a76: Pi 5); "
        "timings are emulated, outputs and memory are real",
    )
    add_output_flags(p.add_argument_group("output"), "the results (schema in docs/bench-json.md)")
    p.alias("inputs", "--data")
    p.alias("hosts", "--host")
    p.set_defaults(run=run, parser=p)
    return p


def run(args) -> int:
    from edgekit.core.errors import render
    from edgekit.device import bench

    check_outputs(args, [(args.json, "--json", False)], list(args.models) + [args.data])
    if args.data:
        from edgekit.core.data import check_npz

        check_npz(args.data)
    results = bench(
        args.models,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        xnnpack=args.xnnpack,
        inputs=args.data,
        duration=args.duration,
        hosts=args.host,
        remote_python=args.remote_python,
        ssh_config=args.ssh_config,
        qemu=args.qemu,
        progress=False if args.json == "-" else None,
        learn=args.learn,
    )
    doc = bench_document(
        results,
        runs=args.runs,
        warmup=args.warmup,
        duration=args.duration,
        xnnpack=args.xnnpack,
        inputs=args.data,
        learn=args.learn,
    )
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    else:
        from edgekit.core.io import write_atomic

        runs = f"{args.duration:g} s of timed runs" if args.duration else f"{args.runs} timed runs"
        runs = f"{args.runs} timed train steps" if args.learn else runs
        print(
            f"{args.warmup} warm-up + {runs}, XNNPACK {'on' if args.xnnpack else 'off'}, "
            "one process per model; (×) = ratio to the first model on the same target and threads"
        )
        print(format_bench(results, learn=args.learn))
        if args.json:
            write_atomic(args.json, json.dumps(doc, indent=2) + "\n", overwrite=args.overwrite)
            print(f"wrote {args.json}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        where = f" on {r.host}" if r.host else ""
        err(f"error: {r.model}{where}: {render(r.error, args.parser.name)}")
    return EXIT_FAILED if failed else EXIT_OK


def bench_document(results, **settings) -> dict:
    """The --json document (docs/bench-json.md): settings, then one entry per result with its
    ratios to the first model on the same target and thread count."""
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "results": [{**r.to_dict(), "ratio_to_first": q} for r, q in zip(results, ratios(results))],
    }


def format_bench(results, learn: bool = False) -> str:
    """The side-by-side table, board facts per target and throttling warnings; ``learn``: of train
    steps (``bench(..., learn=True)``)."""

    def with_ratio(value, q, key, spec):
        text = fmt(value, spec)
        return f"{text} ({q[key]:.2f}×)" if q and q.get(key) is not None and value is not None else text

    many_targets = len({r.host for r in results}) > 1 or any(r.host for r in results)
    many_threads = len({r.threads for r in results}) > 1
    times = ["step p50 ms", "step p90 ms", "inference p50 ms", "step / inference"] if learn else []
    head = (
        (["target"] if many_targets else [])
        + ["model"]
        + (["threads"] if many_threads else [])
        + (times or ["p50 ms", "p90 ms", "p99 ms"])
        + ["start-up ms", "peak RSS MiB", "footprint MiB", "loss first → last" if learn else "accuracy / MAE"]
    )
    rows, notes = [], []
    for r, q in zip(results, ratios(results)):
        row = ([r.host or "local"] if many_targets else []) + [r.model] + ([str(r.threads)] if many_threads else [])
        if r.ok:
            lat, start = r.latency_ms, r.data.get("startup_ms") or {}
            startup = sum(start.get(k) or 0.0 for k in ("load", "allocate", "first_invoke"))
            per = (r.data.get("step_per_inference"),)
            row += [with_ratio(lat["p50"], q, "p50", ".3f"), with_ratio(lat["p90"], q, "p90", ".3f")]
            row += [fmt((r.data.get("inference_ms") or {}).get("p50"), ".3f"), fmt(*per, ".1f")] if learn else []
            row += [] if learn else [fmt(lat["p99"], ".3f")]
            row += [
                fmt(startup, ".1f"),
                with_ratio(r.peak_rss_mb, q, "peak_rss", ".1f"),
                with_ratio(r.footprint_mb, q, "footprint", ".1f"),
                r.quality() or "-",
            ]
            notes += [
                f"warning: {r.model}: {w}; its latency reflects the board's state"
                for w in (r.data.get("board") or {}).get("warnings", [])
            ]
        else:
            row += ["failed"] + [""] * (len(head) - len(row) - 1)
        rows.append(row)
    lines = [table(head, rows)]
    seen = set()
    for r in results:
        board = (r.data.get("board") or {}).get("before") if r.ok else None
        if not board or r.host in seen:
            continue
        seen.add(r.host)
        facts = [
            board.get("model") or board.get("cpu"),
            f"{board.get('cores')} cores" if board.get("cores") else None,
            board.get("governor"),
            f"{board['freq_mhz']:g} MHz" if board.get("freq_mhz") else None,
            f"{board['temp_c']:g} C" if board.get("temp_c") is not None else None,
        ]
        where = f"board {r.host}" if r.host else "board"
        rt = r.data.get("runtime") or {}
        plat = r.data.get("platform") or {}
        facts.append(f"{plat.get('machine')}, python {plat.get('python')}, {rt.get('name')} {rt.get('version')}")
        lines.append(f"{where}: " + ", ".join(f for f in facts if f))
        if r.emulated:
            lines.append(f"note: {r.host} is emulated: its timings say nothing about a real board's speed")
    return "\n".join(lines + notes)
