"""``edgekit search``: recipes for a model tried on the target and measured, with the Pareto front
of accuracy (a regression model: MAE), p50 latency and size (see :mod:`edgekit.app.search`)."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_OK, add_bench_flags, add_unsafe_load, int_at_least, number

HELP = "find the best recipes for a board: each trial fine-tuned, exported, verified and measured"


def add_parser(sub):
    from edgekit.app.search import SAMPLERS

    p = sub.add_parser(
        "search",
        help=HELP,
        description="Try recipes (channel pruning, sparsity, clustering, QAT, "
        "int8/int16x8, distillation, fine-tune length) on IN.keras with Optuna, each trial fine-tuned on "
        "DATA, exported, verified and benchmarked on the target; write the Pareto front (search.json, "
        "pareto.png, front/ with a recipe TOML and the .tflite of each point) to DIR. The same command "
        "again continues the study.",
    )
    p.add_argument("model", metavar="IN.keras")
    g = p.add_argument_group("data and output")
    g.add_argument(
        "--data", required=True, metavar="DATA", help="fine-tune and test data: digits, .npz or an image directory"
    )
    g.add_argument("-o", "--output", required=True, metavar="DIR", help="the study's directory (created, or continued)")
    g.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write search.json's content to PATH ('-' or no PATH: stdout, nothing else on stdout)",
    )
    add_unsafe_load(g)
    _search_flags(p.add_argument_group("search"), SAMPLERS)
    _limit_flags(p.add_argument_group("limits (every reported point meets them)"))
    _target_flags(p.add_argument_group("target"))
    add_bench_flags(p, runs=100, warmup=10)
    p.set_defaults(run=run, quiet_native=True)
    return p


def _search_flags(g, samplers):
    g.add_argument(
        "--trials", type=int_at_least("--trials", 1), default=24, help="complete trials in the study (default 24)"
    )
    g.add_argument("--space", metavar="SPACE.toml", help="narrow or widen the search space (see docs/search.md)")
    g.add_argument(
        "--sampler", choices=samplers, default="tpe", help="Optuna sampler (default tpe: multi-objective TPE)"
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--no-hand-made",
        dest="hand_made",
        action="store_false",
        help="a new study does not begin with the demo's hand-made recipes (which it otherwise tries first)",
    )
    g.add_argument(
        "--storage",
        metavar="URL",
        help="share the study through a database: postgresql://user@host/db "
        "(default: DIR/study.log, this machine only)",
    )
    g.add_argument("--study", default="edgekit-search", metavar="NAME", help="study name in the storage")
    g.add_argument(
        "--heartbeat",
        type=number(1.0, 3600.0, name="--heartbeat"),
        default=30.0,
        metavar="SECONDS",
        help="with --storage: a worker silent for 4x this long is dead and its trial failed (default 30)",
    )


def _limit_flags(g):
    g.add_argument(
        "--max-drop",
        type=number(0.0, 100.0, name="--max-drop"),
        metavar="POINTS",
        help="accuracy points below the float32 model (a regression model: percent above its MAE)",
    )
    g.add_argument(
        "--max-latency", type=number(0.0, 1e9, open_low=True, name="--max-latency"), metavar="MS", help="p50 ms"
    )
    g.add_argument(
        "--max-size", type=number(0.0, 1e9, open_low=True, name="--max-size"), metavar="KB", help=".tflite KB"
    )


def _target_flags(g):
    g.add_argument("--host", metavar="USER@BOARD[:PORT]", help="measure on this board over SSH (default: this machine)")
    g.add_argument("--ssh-config", metavar="FILE", help="with --host: OpenSSH client config file (ssh -F)")
    g.add_argument("--remote-python", metavar="PATH", help="with --host: the board's python (default: python3 there)")
    g.add_argument(
        "--qemu",
        metavar="CPU",
        choices=("cortex-a72", "cortex-a76"),
        help="also run each trial's file on ARM64 under QEMU (correctness only; its timings are not real)",
    )
    g.add_argument(
        "--board",
        metavar="NAME",
        help="a microcontroller board (see `edgekit mcu --help`): each trial's "
        "TFLM arena and flash, and fitting it as a limit",
    )


def run(args) -> int:
    from edgekit.app.cli._common import check_outputs, emit
    from edgekit.app.search import Limits, Target, check_search_dir, search
    from edgekit.app.search.space import load_space
    from edgekit.core.data import check_data_spec
    from edgekit.core.modelfile import scan
    from edgekit.core.saving import load_keras_model

    space = load_space(args.space)
    limits = Limits(args.max_drop, args.max_latency, args.max_size)
    if args.board:
        from edgekit.converters.tflm import BOARDS

        if args.board not in BOARDS:
            from edgekit.core.errors import InputError

            raise InputError(f"unknown board {args.board!r}; known boards: {', '.join(BOARDS)}")
    check_search_dir(args.output)
    check_outputs(args, [(args.json, "--json", False)], [args.model, args.data, args.space])
    scan(args.model, safe_mode=not args.unsafe_load)
    check_data_spec(args.data)
    model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    quiet = args.json == "-"
    result = search(
        model,
        args.data,
        directory=args.output,
        trials=args.trials,
        space=space,
        limits=limits,
        target=Target(
            args.host, args.qemu, args.board, args.runs, args.warmup, args.threads, args.ssh_config, args.remote_python
        ),
        storage=args.storage,
        study=args.study,
        sampler=args.sampler,
        seed=args.seed,
        heartbeat=args.heartbeat,
        hand_made=args.hand_made,
        log=None if quiet else (lambda m: print(m, flush=True)),
    )
    emit(args, result)
    return EXIT_OK
