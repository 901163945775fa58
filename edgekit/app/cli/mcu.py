"""``edgekit mcu``: will a .tflite model fit a microcontroller? Measured with TFLM's interpreter."""

from __future__ import annotations

import dataclasses
import os

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
    g.add_argument(
        "--fit",
        metavar="OUT.tflite",
        help="write the least-RAM version of the model here and measure it: Dense and pointwise layers per tensor "
        "where the metric on --data (its labels; without them a softmax's own classes, or an autoencoder's input) "
        "holds, and "
        "an offline memory plan where TFLM's arena shrinks (docs/mcu.md)",
    )
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

    check_outputs(args, [(args.json, "--json", False), (args.fit, "--fit", False)], [args.model, args.data])
    if args.fit and not args.data:
        from edgekit.core.errors import InputError

        raise InputError("--fit needs --data DATA: each layer's choice is measured on it")
    x = y = None
    if args.data:
        from edgekit.converters.inspection import inspect_tflite
        from edgekit.core.data import check_data_spec, load_data
        from edgekit.device.board.harness import io_names, load_interpreter

        check_data_spec(args.data)
        shape = tuple(inspect_tflite(args.model).inputs[0]["shape"][1:])
        data = load_data(args.data, shape, *io_names(load_interpreter(args.model, xnnpack=False, allocate=False)))
        x, y = data.x_test, data.y_test

    def measure(model, emit_dir=None):
        return mcu(
            model,
            board=args.board,
            ram_kb=args.ram_kb,
            flash_kb=args.flash_kb,
            validation_data=(x, y),
            samples=args.samples,
            emit=emit_dir,
            name=os.path.splitext(os.path.basename(args.fit or args.model))[0],
            overwrite=args.overwrite,
            max_arena_kb=args.max_arena_kb,
            allow_float=args.allow_float,
        )

    report = _fit(args, x, y, measure, mcu) if args.fit else measure(args.model, args.emit)
    emit(args, report)
    if report.fits is False:
        from edgekit.app.cli._common import err

        err(f"error: {args.model} does not fit {report.board_label}: it needs {report.shortfall()}")
        return EXIT_FAILED
    return EXIT_OK


def _fit(args, x, y, measure, mcu):
    """--fit: the least-RAM file (per-tensor layers, an offline memory plan) measured, then written
    (with its C sources for --emit) when it runs and fits."""
    from edgekit.converters.inspection import read_tflite
    from edgekit.converters.least_ram import fit_file, with_choices, with_offline_plan
    from edgekit.converters.mcu import _check_emit, emit_sources
    from edgekit.core.io import write_atomic

    name = os.path.splitext(os.path.basename(args.fit))[0]
    if args.emit:
        _check_emit(args.emit, name, args.overwrite)
    fitted, ram = fit_file(read_tflite(args.model), x, y)
    report = with_choices(measure(fitted), ram, lambda per_channel: mcu(per_channel).arena_bytes)
    fitted, report = with_offline_plan(fitted, report, measure)
    if report.fits is False:
        return report
    write_atomic(args.fit, fitted, overwrite=args.overwrite)
    ops, emitted = list(report.ops), []
    if args.emit:
        emitted = emit_sources(args.emit, name, fitted, ops, report.arena_bytes, overwrite=args.overwrite)
    return dataclasses.replace(report, model=args.fit, emitted=emitted)
