"""``edgekit mcu``: will a .tflite model fit a microcontroller? Measured with TFLM's interpreter."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_FAILED, EXIT_OK, add_output_flags, check_outputs, emit, int_at_least
from edgekit.app.cli.argtypes import number

HELP = "arena RAM, flash and op coverage of a .tflite model under TFLM; C sources for a board"


def add_parser(sub):
    from edgekit.converters.tflm import BOARDS

    p = sub.add_parser(
        "mcu",
        help=HELP,
        description="Run a .tflite model with TensorFlow Lite for Microcontrollers "
        "(TFLM) on this machine: check every op has a TFLM kernel, find the smallest tensor arena by "
        "bisection with the real interpreter, size the flash, and say whether it fits a board. With "
        "--data, compare TFLM's outputs with LiteRT's; with --emit, write the C sources to ship it.",
    )
    p.add_argument("model", metavar="MODEL.tflite")
    g = p.add_argument_group("board (default: every known board)")
    g.add_argument("--board", metavar="NAME", help=f"one of: {', '.join(BOARDS)} (see docs/mcu.md)")
    g.add_argument(
        "--ram",
        dest="ram_kb",
        type=number(0.0, 1e7, open_low=True, name="--ram"),
        metavar="KB",
        help="another board: the RAM the tensor arena may use, KB (with --flash)",
    )
    g.add_argument(
        "--flash",
        dest="flash_kb",
        type=number(0.0, 1e8, open_low=True, name="--flash"),
        metavar="KB",
        help="another board: its flash, KB (with --ram)",
    )
    g = p.add_argument_group("measurement")
    g.add_argument(
        "--data",
        "--inputs",
        dest="data",
        metavar="DATA",
        help="'digits', a .npz with x (and y) or x_test/y_test, or an image directory: run its test "
        "samples under TFLM and LiteRT and compare (top-1 agreement, quantization steps, accuracy)",
    )
    g.add_argument(
        "--samples",
        type=int_at_least("--samples", 1),
        default=360,
        metavar="N",
        help="test samples compared (default 360)",
    )
    g.add_argument(
        "--max-arena",
        dest="max_arena_kb",
        type=number(0.0, 1 << 20, open_low=True, name="--max-arena"),
        default=8192,
        metavar="KB",
        help="largest arena tried (default 8192 KB)",
    )
    g.add_argument("--allow-float", action="store_true", help="measure a model that is not int8 anyway")
    g = p.add_argument_group("output")
    g.add_argument(
        "--emit",
        metavar="DIR",
        help="write NAME.cc/.h (the model as a C array) and NAME_ops.h (a "
        "MicroMutableOpResolver with exactly its ops) into DIR (new or empty; --overwrite for edgekit's own)",
    )
    add_output_flags(g, "the report")
    p.alias("validation_data", "the test split of --data")
    p.alias("quant", "edgekit export --quant int8", value="'int8'")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from edgekit.converters.mcu import mcu

    check_outputs(args, [(args.json, "--json", False)], [args.model, args.data])
    x = y = None
    if args.data:
        from edgekit.converters.inspection import inspect_tflite
        from edgekit.core.data import check_data_spec, load_data
        from edgekit.device.board.harness import io_names, load_interpreter

        check_data_spec(args.data)
        shape = tuple(inspect_tflite(args.model).inputs[0]["shape"][1:])
        data = load_data(args.data, shape, *io_names(load_interpreter(args.model, xnnpack=False, allocate=False)))
        x, y = data.x_test, data.y_test
    report = mcu(
        args.model,
        board=args.board,
        ram_kb=args.ram_kb,
        flash_kb=args.flash_kb,
        validation_data=(x, y),
        samples=args.samples,
        emit=args.emit,
        overwrite=args.overwrite,
        max_arena_kb=args.max_arena_kb,
        allow_float=args.allow_float,
    )
    emit(args, report)
    if report.fits is False:
        from edgekit.app.cli._common import err

        err(f"error: {args.model} does not fit {report.board_label}: it needs {report.shortfall()}")
        return EXIT_FAILED
    return EXIT_OK
