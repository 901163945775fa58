"""The ``edgekit`` command.

Exit codes: 0 success; 1 a check failed (verification, a model that did not benchmark);
2 bad input or usage; 70 an internal error; 130 interrupted. Errors are one line on stderr,
without a traceback (set ``EDGEKIT_DEBUG=1`` to see one for an internal error).

TensorFlow's native logging (fd 2) is captured while ``demo`` and ``export`` run and shown only
with an internal error, or always with ``EDGEKIT_DEBUG=1``.

TensorFlow is imported only by the subcommands that need it, so ``edgekit --help``,
``edgekit bench`` and ``edgekit inspect`` start quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, pointing at --help, exit 2."""

    def error(self, message):
        _err(f"error: {message} (see '{self.prog} --help')")
        sys.exit(EXIT_USAGE)


def _int_at_least(name: str, low: int):
    """An argparse type: an integer >= ``low``, with an error naming the flag."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, received '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, received {value}")
        return value

    return parse


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], received '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], received {value}")
    return value


def _thread_list(text):
    """--threads: one count or a comma list (a sweep)."""
    values = [_int_at_least("--threads", 1)(t.strip()) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"--threads must be a count or a comma list, received '{text}'")
    return values


def _fraction_open(text):
    value = _fraction(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), received {value}")
    return value


def _seconds(text):
    """--duration: a finite number of seconds in (0, 1 day]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--duration must be a number of seconds, received '{text}'") from None
    if not 0.0 < value <= 86400.0:
        raise argparse.ArgumentTypeError(f"--duration must be in (0, 86400] seconds, received '{text}'")
    return value


def _add_bench_flags(p, runs=100, warmup=10, sweep=False):
    g = p.add_argument_group("benchmark")
    g.add_argument("--runs", type=_int_at_least("--runs", 1), default=runs, help=f"timed invokes per model (default {runs})")
    g.add_argument("--warmup", type=_int_at_least("--warmup", 0), default=warmup,
                   help=f"untimed invokes before timing (default {warmup})")
    if sweep:
        g.add_argument("--threads", type=_thread_list, default=[1], metavar="N[,N...]",
                       help="interpreter threads; a comma list sweeps them (default 1)")
    else:
        g.add_argument("--threads", type=_int_at_least("--threads", 1), default=1, help="interpreter threads (default 1)")


def _add_unsafe_load(p):
    p.add_argument("--unsafe-load", action="store_true",
                   help="load model files that would run Python code (Lambda layers, unknown modules): only "
                   "for files you trust")


def build_parser() -> argparse.ArgumentParser:
    from edgekit import __version__

    parser = _Parser(
        prog="edgekit",
        description="Keras → verified int8 .tflite → measured on the board.",
        epilog="Run 'edgekit COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="train, export, verify and benchmark on the embedded digits data",
                       description="Train a MobileNetV2-style model on scikit-learn's digits, export "
                       "float32 and int8 .tflite files, verify and benchmark them, write a report.")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--model", default="mobilenet_v2", metavar="NAME",
                   help="registered classifier to train, digits preset (default mobilenet_v2; "
                   "see `edgekit models`)")
    p.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=20, help="training epochs (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier demo run")
    p.add_argument("--no-optimize", dest="optimized", action="store_false",
                   help="only float32 and int8 (skip the pruned, 2:4, clustered, QAT and PCQAT variants)")
    _add_bench_flags(p, runs=200, warmup=20)
    p.set_defaults(func=cmd_demo, quiet_native=True)

    p = sub.add_parser("export", help="convert a Keras model to a verified .tflite file",
                       description="Convert a tf_keras model (.keras, .h5 or SavedModel) to .tflite, "
                       "verify it (dtype audit, XNNPACK run, agreement with Keras) and write it.")
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("--quant", required=True, metavar="MODE",
                   help="float32; float16 (half-size weights); dynamic (int8 weights, float "
                   "activations); int8 (full integer); int16x8 (int16 activations, int8 weights)")
    p.add_argument("--io", choices=("int8", "uint8", "int16", "float32"),
                   help="input/output dtype of an integer model (int8: int8 (default), uint8 or "
                   "float32; int16x8: int16 (default) or float32)")
    p.add_argument("--sparse", action="store_true",
                   help="encode zero weights sparsely (for pruned models; verified under XNNPACK)")
    g = p.add_argument_group("data")
    g.add_argument("--calib", metavar="DATA",
                   help="'digits', a .npz with x (and y) or x_train/y_train/x_test/y_test, or a "
                   "directory of images: calibrates (train split) and verifies (test split); "
                   "required for int8 and int16x8")
    g.add_argument("--calib-samples", type=_int_at_least("--calib-samples", 1), default=256,
                   help="calibration samples (default 256, drawn with --seed)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, metavar="OUT.tflite")
    g.add_argument("--report", metavar="OUT.json", help="write the export report as JSON")
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_unsafe_load(g)
    g = p.add_argument_group("verification")
    g.add_argument("--min-agreement", type=_fraction, metavar="F",
                   help="fail (exit 1, nothing written) if top-1 agreement with Keras is below F")
    g.add_argument("--keep-float", metavar="auto|LAYER[,LAYER]",
                   help="int8: leave these Keras layers in float, or 'auto': the most sensitive "
                   "ones until --min-agreement holds")
    g.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="one scale per weight tensor instead of per output channel (for clustered "
                   "models: a kernel's k shared values stay k values, so the file compresses better)")
    g.add_argument("--no-layer-errors", dest="layer_errors", action="store_false",
                   help="int8: skip the per-layer quantization error measurement")
    p.set_defaults(func=cmd_export, quiet_native=True)

    p = sub.add_parser("optimize", help="channel-prune, factorize, prune, cluster, distill and/or quantization-aware train a "
                       "Keras model",
                       description="Apply a recipe (or --channel-prune/--factorize-*/--prune/--cluster/--distill-from/"
                       "--qat) to a tf_keras model, "
                       "fine-tuning after each step on DATA, and report what each step achieved, "
                       "measured from the weights and on the test split.")
    p.add_argument("model", metavar="IN.keras")
    p.add_argument("--data", required=True, metavar="DATA", help="fine-tune data: digits, .npz or an image directory")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.keras; a quantization-aware model is written as a SavedModel directory")
    p.add_argument("--recipe", metavar="R.toml", help="steps in order with their fine-tune settings (see README)")
    p.add_argument("--channel-prune", type=_fraction_open, metavar="RATIO",
                   help="remove RATIO of the prunable channels/units (a smaller dense model; first step)")
    p.add_argument("--target-params", type=_int_at_least("--target-params", 1), metavar="N",
                   help="channel-prune until the model has at most N params")
    p.add_argument("--target-macs", type=_int_at_least("--target-macs", 1), metavar="N",
                   help="channel-prune until the model needs at most N MACs")
    p.add_argument("--target-latency", type=float, metavar="MS",
                   help="channel-prune until the int8 model's p50 latency here (device harness, XNNPACK, "
                   "1 thread) is at most MS milliseconds")
    p.add_argument("--factorize-rank", type=_int_at_least("--factorize-rank", 1), metavar="R",
                   help="low-rank factorization (truncated SVD) of Dense/Conv2D layers at rank R")
    p.add_argument("--factorize-energy", type=_fraction_open, metavar="E",
                   help="factorize each layer at the least rank keeping E of its singular-value energy")
    p.add_argument("--factorize-params", type=_int_at_least("--factorize-params", 1), metavar="N",
                   help="factorize until the model has at most N params")
    p.add_argument("--prune", type=_fraction_open, metavar="SPARSITY", help="magnitude pruning to SPARSITY")
    p.add_argument("--pattern", choices=("unstructured", "2:4"), default="unstructured",
                   help="pruning pattern (default unstructured; 2:4: 2 zeros in every 4 input weights)")
    p.add_argument("--cluster", type=_int_at_least("--cluster", 2), metavar="K", help="weight clustering, K clusters")
    p.add_argument("--qat", action="store_true", help="quantization-aware training (last step)")
    p.add_argument("--qat-skip", action="append", default=[], metavar="LAYER", help="leave LAYER in float under QAT")
    p.add_argument("--distill-from", metavar="TEACHER.keras",
                   help="every fine-tune learns from this teacher's outputs too (alone: one distill step)")
    p.add_argument("--distill", action="store_true",
                   help="every fine-tune distills from IN.keras as it came in (recovery after channel pruning)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.1,
                   help="distillation: weight of the label loss, 1-alpha on the teacher's (default 0.1)")
    p.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=2, help="fine-tune epochs per step (default 2)")
    p.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=32, help="default 32")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tune learning rate (default 5e-4)")
    p.add_argument("--report", metavar="OUT.json", help="write the per-step, per-layer report as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_unsafe_load(p)
    p.set_defaults(func=cmd_optimize, quiet_native=True)

    p = sub.add_parser("bench", help="benchmark .tflite models, each in a fresh process, here or on boards",
                       description="Measure latency percentiles, start-up and memory of each model with "
                       "the LiteRT interpreter, one fresh child process per model: on this machine, on "
                       "boards over SSH (--host), or on ARM64 under QEMU (--qemu). Each figure is also "
                       "given as a ratio to the first model.")
    p.add_argument("models", nargs="+", metavar="MODEL.tflite")
    _add_bench_flags(p, sweep=True)
    p.add_argument("--duration", type=_seconds, metavar="SECONDS",
                   help="time runs for this many seconds per model instead of --runs")
    p.add_argument("--no-xnnpack", dest="xnnpack", action="store_false",
                   help="disable LiteRT's default XNNPACK delegate")
    p.add_argument("--inputs", metavar="DATA.npz",
                   help=".npz with x (and y: on-device accuracy); default random inputs")
    p.add_argument("--json", metavar="OUT.json", help="write the results to OUT.json ('-' for stdout; "
                   "schema in docs/bench-json.md)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    g = p.add_argument_group("targets")
    g.add_argument("--host", action="append", default=[], metavar="USER@BOARD[:PORT]",
                   help="run on this board over SSH (repeat for a fleet, run in parallel)")
    g.add_argument("--remote-python", metavar="PATH",
                   help="the board's python (default: the venv of 'edgekit device setup', else python3)")
    g.add_argument("--ssh-config", metavar="FILE", help="OpenSSH client config file (ssh -F)")
    g.add_argument("--qemu", action="append", default=[], metavar="CPU", choices=("cortex-a72", "cortex-a76"),
                   help="run on ARM64 under QEMU user-mode emulation as this CPU (cortex-a72: Pi 4, "
                   "cortex-a76: Pi 5); timings are emulated, outputs and memory are real")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("device", help="prepare a board for 'edgekit bench --host'")
    dsub = p.add_subparsers(dest="device_command", metavar="COMMAND", parser_class=_Parser)
    dsub.required = True
    d = dsub.add_parser("setup", help="create a venv with numpy + ai-edge-litert on a board over SSH",
                        description="Create (or update) a venv on the board with the harness's only "
                        "needs, numpy and ai-edge-litert, and check they import.")
    d.add_argument("host", metavar="USER@BOARD[:PORT]")
    d.add_argument("--venv", default=".edgekit/venv",
                   help="venv path on the board, relative to the home directory (default .edgekit/venv)")
    d.add_argument("--python", default="python3", help="the board's python that creates the venv (default python3)")
    d.add_argument("--ssh-config", metavar="FILE", help="OpenSSH client config file (ssh -F)")
    d.set_defaults(func=cmd_device_setup)

    p = sub.add_parser("models", help="registered architectures with params, MACs and int8 size",
                       description="List the registered model builders with the parameters, "
                       "MACs, peak int8 activation memory and estimated int8 .tflite size of each "
                       "preset (profiled from the built model).")
    p.add_argument("--preset", choices=("reference", "digits"), default=None,
                   help="only this preset (default both)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=cmd_models, quiet_native=True)

    p = sub.add_parser("techniques", help="measure what each optimization technique buys (about 15 min)",
                       description="Run weight tying, pruning, distillation, low-rank factorization, "
                       "quantization and efficient architectures against their baselines on this machine and "
                       "print the table; exits 1 if a target is missed.")
    p.add_argument("--model", metavar="DEMO.keras", help="a trained demo model (default: train one)")
    p.add_argument("--readme", metavar="README.md", help="write the Markdown table between the README's "
                   "<!-- techniques:begin/end --> markers")
    p.add_argument("--json", metavar="OUT.json", help="also write the rows as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.json if it exists")
    p.set_defaults(func=cmd_techniques, quiet_native=True)

    p = sub.add_parser("profile", help="per-layer params, MACs and activation memory of a model",
                       description="Profile a registered model (by name) or a saved Keras model.")
    p.add_argument("model", metavar="NAME|MODEL.keras")
    p.add_argument("--preset", choices=("reference", "digits"), default="reference",
                   help="preset of a registered model (default reference)")
    p.add_argument("--int8", action="store_true", help="count 1-byte activations (default 4)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_unsafe_load(p)
    p.set_defaults(func=cmd_profile, quiet_native=True)

    p = sub.add_parser("inspect", help="ops, tensor dtypes and size of a .tflite file",
                       description="Read a .tflite file: ops with their dtypes and MACs, where the "
                       "bytes go, and whether it is fully integer.")
    p.add_argument("model", metavar="MODEL.tflite")
    p.add_argument("--tensors", action="store_true", help="also list every tensor with its bytes")
    p.add_argument("--json", action="store_true", help="print JSON (every op and tensor)")
    p.set_defaults(func=cmd_inspect)
    return parser


def _err(msg: str) -> None:
    print(f"edgekit: {msg}", file=sys.stderr)


def _outputs(args, outputs, inputs=()):
    """Check every output of a command under edgekit's output policy before any work: each is
    new (or ``--overwrite``), none is an input, no two are the same file. ``outputs`` are
    (path, what, is a directory) triples; None paths are skipped."""
    from edgekit._io import check_output
    from edgekit.errors import InputError

    given = [(p, w, d) for p, w, d in outputs if p is not None and p != "-"]
    seen = {}
    for path, what, directory in given:
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(f"{what} and {seen[key]} name the same file ({path}); give each its own name")
        seen[key] = what
        check_output(path, overwrite=getattr(args, "overwrite", False), what=what, directory=directory,
                     inputs=[i for i in inputs if i])
    for i in inputs:
        if i and os.path.abspath(i) in seen:
            raise InputError(f"{seen[os.path.abspath(i)]} {i} is also an input; give the output its own name")


def cmd_demo(args) -> int:
    from edgekit.demo import run_demo

    run_demo(args.out, model_name=args.model, epochs=args.epochs, runs=args.runs, warmup=args.warmup,
             threads=args.threads, seed=args.seed, optimized=args.optimized, overwrite=args.overwrite)
    return EXIT_OK


def cmd_export(args) -> int:
    from edgekit._io import write_atomic
    from edgekit.converters.convert import Quant
    from edgekit.errors import InputError

    quant = Quant.parse(args.quant)
    io = quant.check_io(args.io)
    _outputs(args, [(args.output, "-o", False), (args.report, "--report", False)], [args.model, args.calib])
    if quant.integer and not args.calib:
        raise InputError(f"--quant {quant.value} needs --calib DATA ('digits', a .npz or an image "
                         f"directory) to calibrate activations")
    if args.keep_float and quant is not Quant.INT8:
        raise InputError(f"--keep-float applies to --quant int8, not {quant.value}")
    from edgekit.converters import export, load_keras_model
    from edgekit.data import check_data_spec, load_data
    from edgekit.modelfile import scan

    scan(args.model, safe_mode=not args.unsafe_load)  # before any long work: format, limits, code
    if args.calib:
        check_data_spec(args.calib)
    model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    data = load_data(args.calib, tuple(model.input_shape[1:])) if args.calib else None
    report = export(
        model, args.output, quant, io=io, sparse=args.sparse,
        calib=data,
        eval_x=data.x_test if data else None,
        eval_y=data.y_test if data else None,
        calib_samples=args.calib_samples, min_agreement=args.min_agreement,
        keep_float=args.keep_float, layer_report=args.layer_errors,
        seed=args.seed, overwrite=args.overwrite, progress=f"export {os.path.basename(args.model)}",
        per_channel=args.per_channel,
    )
    if args.report:
        try:
            write_atomic(args.report, report.to_json() + "\n", overwrite=args.overwrite)
        except BaseException:
            os.unlink(args.output)  # all or nothing
            raise
    print(format_export(report))
    if args.report:
        print(f"report: {args.report}")
    return EXIT_OK


def format_export(report) -> str:
    acc = report.accuracy
    lines = [
        f"wrote {report.path}: {report.mode}{' sparse' if report.sparse else ''}, {report.size_bytes:,} bytes "
        f"(gzip {report.gzip_bytes:,}), fully integer: {'yes' if report.fully_integer else 'no'}",
        f"input {report.input['dtype']} {report.input['shape']}, output {report.output['dtype']} "
        f"{report.output['shape']}",
    ]
    if report.calib:
        c = report.calib
        lines.append(f"calibrated on {c['samples']} samples of {c['source']} ({c['selection']}, seed {c['seed']})")
    if report.agreement is not None:
        line = f"verified on {report.verify_samples} samples: top-1 agreement with Keras {report.agreement:.4f}"
        if acc:
            line += f", accuracy keras {acc['keras']:.4f} / tflite {acc['tflite']:.4f}"
        snr = "identical" if report.snr_db is None else f"{report.snr_db:.1f} dB"
        lines.append(line + f", output SNR {snr}, cosine {report.cosine:.4f}")
    if report.worst_layers:
        worst = ", ".join(f"{w['layer']} ({w['op']}) {w['rmse_over_scale']:.2f}" for w in report.worst_layers[:3])
        lines.append(f"int8 error per layer (RMSE / quantization step; 0.29 is rounding noise), worst: {worst}")
    lines.extend(f"note: {n}" for n in report.warnings)
    return "\n".join(lines)


def cmd_bench(args) -> int:
    from edgekit._io import write_atomic
    from edgekit.device import bench
    from edgekit.errors import InputError

    _outputs(args, [(args.json, "--json", False)], list(args.models) + [args.inputs])
    if args.inputs:
        from edgekit.data import check_npz

        check_npz(args.inputs)
    results = bench(args.models, runs=args.runs, warmup=args.warmup, threads=args.threads,
                    xnnpack=args.xnnpack, inputs=args.inputs, duration=args.duration, hosts=args.host,
                    remote_python=args.remote_python, ssh_config=args.ssh_config, qemu=args.qemu,
                    progress=False if args.json == "-" else None)
    doc = bench_document(results, runs=args.runs, warmup=args.warmup, duration=args.duration,
                         xnnpack=args.xnnpack, inputs=args.inputs)
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    else:
        runs = f"{args.duration:g} s of timed runs" if args.duration else f"{args.runs} timed runs"
        print(f"{args.warmup} warm-up + {runs}, XNNPACK {'on' if args.xnnpack else 'off'}, "
              "one process per model; (×) = ratio to the first model on the same target and threads")
        print(format_bench(results))
        if args.json:
            write_atomic(args.json, json.dumps(doc, indent=2) + "\n", overwrite=args.overwrite)
            print(f"wrote {args.json}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        where = f" on {r.host}" if r.host else ""
        _err(f"error: {r.model}{where}: {r.error}")
    return EXIT_FAILED if failed else EXIT_OK


def bench_document(results, **settings) -> dict:
    """The --json document (docs/bench-json.md): settings, then one entry per result with its
    ratios to the first model on the same target and thread count."""
    from edgekit.device import ratios
    from edgekit.device.harness import SCHEMA_VERSION

    return {"schema_version": SCHEMA_VERSION, "settings": settings,
            "results": [{**r.to_dict(), "ratio_to_first": q} for r, q in zip(results, ratios(results))]}


def format_bench(results) -> str:
    """The side-by-side table, board facts per target and throttling warnings."""
    from edgekit.device import ratios
    from edgekit.report import fmt, table

    def with_ratio(value, q, key, spec):
        text = fmt(value, spec)
        return f"{text} ({q[key]:.2f}×)" if q and q.get(key) is not None and value is not None else text

    many_targets = len({r.host for r in results}) > 1 or any(r.host for r in results)
    many_threads = len({r.threads for r in results}) > 1
    head = (["target"] if many_targets else []) + ["model"] + (["threads"] if many_threads else []) + [
        "p50 ms", "p90 ms", "p99 ms", "start-up ms", "peak RSS MiB", "footprint MiB", "accuracy"]
    rows, notes = [], []
    for r, q in zip(results, ratios(results)):
        row = ([r.host or "local"] if many_targets else []) + [r.model] + ([str(r.threads)] if many_threads else [])
        if r.ok:
            lat, start = r.latency_ms, r.data.get("startup_ms") or {}
            startup = sum(start.get(k) or 0.0 for k in ("load", "allocate", "first_invoke"))
            row += [with_ratio(lat["p50"], q, "p50", ".3f"), with_ratio(lat["p90"], q, "p90", ".3f"),
                    fmt(lat["p99"], ".3f"), fmt(startup, ".1f"), with_ratio(r.peak_rss_mb, q, "peak_rss", ".1f"),
                    with_ratio(r.footprint_mb, q, "footprint", ".1f"), fmt(r.accuracy, ".4f")]
            notes += [f"warning: {r.model}: {w}; its latency reflects the board's state"
                      for w in (r.data.get("board") or {}).get("warnings", [])]
        else:
            row += ["failed"] + [""] * 6
        rows.append(row)
    lines = [table(head, rows)]
    seen = set()
    for r in results:
        board = (r.data.get("board") or {}).get("before") if r.ok else None
        if not board or r.host in seen:
            continue
        seen.add(r.host)
        facts = [board.get("model") or board.get("cpu"), f"{board.get('cores')} cores" if board.get("cores") else None,
                 board.get("governor"), f"{board['freq_mhz']:g} MHz" if board.get("freq_mhz") else None,
                 f"{board['temp_c']:g} C" if board.get("temp_c") is not None else None]
        where = f"board {r.host}" if r.host else "board"
        rt = r.data.get("runtime") or {}
        plat = r.data.get("platform") or {}
        facts.append(f"{plat.get('machine')}, python {plat.get('python')}, {rt.get('name')} {rt.get('version')}")
        lines.append(f"{where}: " + ", ".join(f for f in facts if f))
        if r.emulated:
            lines.append(f"note: {r.host} is emulated: its timings say nothing about a real board's speed")
    return "\n".join(lines + notes)


def cmd_optimize(args) -> int:
    from edgekit._io import write_atomic
    from edgekit.converters import load_keras_model
    from edgekit.data import fit_to_input, load_data
    from edgekit.errors import InputError
    from edgekit.optimize import FineTune, Recipe, optimize, save_model
    from edgekit.optimize.techniques import check_save_path
    from edgekit.report import table

    channel_flags = [f for f, v in (("--channel-prune", args.channel_prune), ("--target-params", args.target_params),
                                    ("--target-macs", args.target_macs), ("--target-latency", args.target_latency))
                     if v is not None]
    factor_flags = [f for f, v in (("--factorize-rank", args.factorize_rank), ("--factorize-energy",
                                   args.factorize_energy), ("--factorize-params", args.factorize_params)) if v is not None]
    if args.recipe and (channel_flags or factor_flags or args.prune is not None or args.cluster is not None or args.qat
                        or args.pattern != "unstructured" or args.distill):
        raise InputError("give either --recipe or --channel-prune/--factorize-*/--prune/--pattern/--cluster/--distill/"
                         "--qat, not both")
    if len(channel_flags) > 1:
        raise InputError(f"give one of {', '.join(channel_flags)}: a ratio or one budget")
    if len(factor_flags) > 1:
        raise InputError(f"give one of {', '.join(factor_flags)}")
    if args.distill and args.distill_from:
        raise InputError("give --distill (the input model teaches) or --distill-from TEACHER.keras, not both")
    distill = None
    if args.distill or args.distill_from:
        from edgekit.optimize import DistillConfig

        distill = DistillConfig(temperature=args.temperature, alpha=args.alpha)
    if args.recipe:
        recipe = Recipe.from_toml(args.recipe)
    else:
        channels = factorize = None
        if channel_flags:
            from edgekit.optimize import ChannelPruneConfig

            channels = ChannelPruneConfig(ratio=args.channel_prune or 0.5, target_params=args.target_params,
                                          target_macs=args.target_macs, target_latency=args.target_latency)
        if factor_flags:
            from edgekit.optimize import FactorizeConfig

            factorize = FactorizeConfig(rank=args.factorize_rank, energy=args.factorize_energy or 0.9,
                                        target_params=args.factorize_params)
        recipe = Recipe.from_flags(prune=args.prune, pattern=args.pattern, cluster=args.cluster, qat=args.qat,
                                   fine_tune=FineTune(args.epochs, args.batch_size, args.lr), qat_skip=args.qat_skip,
                                   channel_prune=channels, factorize=factorize, distill=distill)
    out = args.output
    check_save_path(out, recipe.has_qat)  # before training, not after
    _outputs(args, [(out, "-o", recipe.has_qat or not out.endswith((".keras", ".h5"))), (args.report, "--report", False)],
             [args.model, args.data, args.recipe, args.distill_from])
    from edgekit.data import check_data_spec
    from edgekit.modelfile import scan

    for path in (args.model, args.distill_from):
        if path:
            scan(path, safe_mode=not args.unsafe_load)
    check_data_spec(args.data)
    model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    teacher = load_keras_model(args.distill_from, safe_mode=not args.unsafe_load) if args.distill_from else None
    shape = tuple(model.inputs[0].shape[1:])
    ds = load_data(args.data, input_shape=shape)
    if not ds.has_labels:
        raise InputError(f"{args.data} has no labels (y); fine-tuning needs them")
    from edgekit.converters.convert import _input_dtype

    dtype = _input_dtype(model)
    x_train, x_test = fit_to_input(ds.x_train, shape, "--data", dtype), fit_to_input(ds.x_test, shape, "--data", dtype)
    print(f"optimizing {args.model}: {recipe.describe()} on {ds.name} ({len(x_train)} train / "
          f"{len(x_test)} test)", flush=True)
    result = optimize(model, recipe, x_train, ds.y_train, x_test=x_test, y_test=ds.y_test, seed=args.seed,
                      log=lambda msg: print(msg, flush=True), teacher=teacher)
    rows = [["(input)", "", fmt_acc(result.baseline_accuracy), "", "", ""]]
    for s in result.steps:
        w = s.weights
        rows.append([s.step, f"{s.seconds:.1f}", fmt_acc(s.accuracy), f"{w.zeros:.3f}",
                     f"{max(l.unique for l in w.layers):,}" if w.layers else "-", f"{w.params:,}"])
    print(table(("step", "seconds", "test accuracy", "zeros (kernels)", "max distinct/kernel", "params"), rows))
    print(result.steps[-1].weights.table())
    for s in result.steps:
        if s.details and s.technique == "factorize":
            from edgekit.optimize import FactorizedLayer, FactorizeResult

            print(FactorizeResult(None, [FactorizedLayer(**{**l, "shape": tuple(l["shape"])}) for l in s.details["layers"]],
                                  tuple(s.details["params"])).table())
        elif s.details:
            d = s.details
            print(f"{s.step}: params {d['params'][0]:,} → {d['params'][1]:,}, MACs {d['macs'][0]:,} → "
                  f"{d['macs'][1]:,}" + (f", dropped {', '.join(d['dropped_blocks'])}" if d["dropped_blocks"] else ""))
            print(table(("layer", "width before", "after"), [[k, f"{b:,}", f"{a:,}"] for k, (b, a) in
                                                             d["widths"].items()], align="lrr"))
            if d["barriers"]:
                print(f"left alone (channel semantics not known, a barrier): {', '.join(d['barriers'])}")
    for note in result.warnings:
        print(f"warning: {note}")
    save_model(result.model, out, overwrite=args.overwrite)
    print(f"wrote {out}")
    if args.report:
        write_atomic(args.report, json.dumps({"model": args.model, "recipe": recipe.describe(), **result.to_dict()},
                                             indent=2) + "\n", overwrite=args.overwrite)
        print(f"wrote {args.report}")
    return EXIT_OK


def fmt_acc(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_device_setup(args) -> int:
    from edgekit.device import setup

    print(f"creating a venv with numpy + ai-edge-litert on {args.host} ({args.venv}) ...", flush=True)
    info = setup(args.host, venv=args.venv, python=args.python, ssh_config=args.ssh_config)
    print(f"{args.host}: python {info['python']}, numpy {info['numpy']}, ai-edge-litert {info['litert']} "
          f"in {info['venv']}")
    hint = "" if args.venv == ".edgekit/venv" else f" --remote-python {info['venv']}/bin/python"
    print(f"next: edgekit bench MODEL.tflite --host {args.host}{hint}")
    return EXIT_OK


def models_table(preset=None, markdown: bool = False, rows=None) -> str:
    """The registered models with params, MACs, peak int8 activations and estimated int8 size."""
    from edgekit.report import table

    rows = rows if rows is not None else model_rows(preset)
    return table(("model", "preset", "input", "params", "MACs", "peak act. int8", "int8 .tflite est."),
                 [[r["name"], r["preset"], "x".join(map(str, r["input_shape"])), f"{r['params']:,}",
                   f"{r['macs'] / 1e6:,.1f}M", f"{r['peak_activation_bytes_int8'] / 1024:,.1f} KiB",
                   f"{r['int8_bytes_estimate'] / 1024:,.1f} KiB"] for r in rows],
                 markdown=markdown, align="lllrrrr")


def model_rows(preset=None) -> list:
    from edgekit.models import available, create, profile

    rows = []
    for name in available():
        for p_name in [preset] if preset else ["reference", "digits"]:
            model = create(name, preset=p_name)
            p = profile(model, dtype_bytes=1)  # params and MACs do not depend on the dtype
            rows.append({"name": name, "preset": p_name, "params": p.params, "macs": p.macs,
                         "input_shape": list(model.input_shape[1:]),
                         "peak_activation_bytes_int8": p.peak_activation_bytes,
                         "int8_bytes_estimate": p.int8_bytes})
    return rows


def cmd_techniques(args) -> int:
    from edgekit.techniques import main

    argv = [a for flag, v in (("--model", args.model), ("--readme", args.readme), ("--json", args.json)) if v
            for a in (flag, v)] + (["--overwrite"] if args.overwrite else [])
    return main(argv)


def cmd_models(args) -> int:
    rows = model_rows(args.preset)
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
    else:
        print(models_table(rows=rows, markdown=args.markdown))
    return EXIT_OK


def cmd_profile(args) -> int:
    from edgekit.models import available, create, profile

    if args.model in available():
        model = create(args.model, preset=args.preset)
    else:
        from edgekit.converters import load_keras_model
        from edgekit.errors import InputError

        if not os.path.exists(args.model):
            raise InputError(f"'{args.model}' is neither a registered model ({', '.join(available())}) "
                             f"nor an existing .keras file")
        model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    p = profile(model, dtype_bytes=1 if args.int8 else 4)
    print(p.to_json() if args.json else p.format())
    return EXIT_OK


def cmd_inspect(args) -> int:
    from edgekit.converters.inspection import format_info, inspect_tflite

    info = inspect_tflite(args.model)
    if args.json:
        print(json.dumps({"model": args.model, **info.to_dict()}, indent=2))
    else:
        print(format_info(info, args.model, tensors=args.tensors))
    return EXIT_OK


# The library names its parameters; the command line names flags.
FLAG_WORDS = {"`overwrite=True`": "--overwrite", "`safe_mode=False`": "--unsafe-load",
              "`y_test`": "the test labels of --data", "`y`": "the labels of --data"}


def cli_words(message: str) -> str:
    for word, flag in FLAG_WORDS.items():
        message = message.replace(word, flag)
    return message


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every temporary file and child process is cleaned up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
    raise Terminated(signum)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from edgekit.device.harness import HarnessError
    from edgekit.errors import EdgekitError

    import contextlib
    import shutil
    import tempfile

    from edgekit._io import captured_native_stderr

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    # Temporary files of this run (TensorFlow's converter writes SavedModels there) go into one
    # private directory, removed however the run ends.
    private_tmp = tempfile.mkdtemp(prefix="edgekit-")
    tempfile.tempdir = private_tmp
    os.environ["TMPDIR"] = private_tmp
    quiet = getattr(args, "quiet_native", False) and not os.environ.get("EDGEKIT_DEBUG")
    native = captured_native_stderr() if quiet else contextlib.nullcontext(lambda: "")
    captured = lambda: ""  # noqa: E731
    try:
        with native as captured:
            return args.func(args)
    except Terminated as exc:
        _err(f"stopped by signal {signal.Signals(exc.signum).name}; nothing was left half-written")
        return 128 + exc.signum
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader closed stdout (`edgekit inspect M | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (EdgekitError, HarnessError) as exc:
        _err(f"error: {cli_words(' '.join(str(exc).split()))}")
        return getattr(exc, "exit_code", EXIT_USAGE)
    except Exception as exc:
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        log = captured().strip()
        if log:
            print(log, file=sys.stderr)
        _err(f"internal error: {type(exc).__name__}: {text} (set EDGEKIT_DEBUG=1 for the traceback)")
        return EXIT_INTERNAL
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
