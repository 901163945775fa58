"""``edgekit demo``: train, export, verify and benchmark on the embedded digits data."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_OK, add_bench_flags, int_at_least
from edgekit.app.demo import DEFAULT_EPOCHS

HELP = "train, export, verify and benchmark on the embedded digits data"


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help=HELP,
        description="Train a MobileNetV2-style model on scikit-learn's digits, export "
        "float32 and int8 .tflite files, verify and benchmark them, write a report.",
    )
    g = p.add_argument_group("what to run")
    g.add_argument(
        "--model",
        default="mobilenet_v2",
        metavar="NAME",
        help="registered classifier to train, digits preset (default mobilenet_v2; see `edgekit models`)",
    )
    g.add_argument(
        "--epochs",
        type=int_at_least("--epochs", 1),
        default=DEFAULT_EPOCHS,
        help=f"training epochs (default {DEFAULT_EPOCHS})",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--no-optimize",
        dest="optimized",
        action="store_false",
        help="only float32 and int8 (skip the channel-pruned, pruned, 2:4, clustered, QAT and PCQAT variants)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    g.add_argument(
        "--overwrite", action="store_true", help="replace --out (if it holds an earlier demo run) and --json"
    )
    g.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the report as JSON to PATH ('-' or no PATH: stdout, and nothing else on stdout)",
    )
    add_bench_flags(p, runs=200, warmup=20)
    p.set_defaults(run=run, quiet_native=True)
    return p


def run(args) -> int:
    from edgekit.app.cli._common import check_outputs
    from edgekit.app.demo import run_demo

    check_outputs(args, [(args.json, "--json", False)])
    report = run_demo(
        args.out,
        model_name=args.model,
        epochs=args.epochs,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
        optimized=args.optimized,
        overwrite=args.overwrite,
        log=None if args.json == "-" else print,
    )
    if args.json == "-":
        print(report.to_json())
    elif args.json:
        from edgekit.core.io import write_atomic

        write_atomic(args.json, report.to_json() + "\n", overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return EXIT_OK
