"""``edgekit export``: a Keras model to a verified ``.tflite`` file."""

from __future__ import annotations

import os

from edgekit.app.cli._common import (
    EXIT_OK,
    add_output_flags,
    add_task,
    add_unsafe_load,
    check_outputs,
    emit,
    fraction,
    int_at_least,
)
from edgekit.app.cli.argtypes import number

HELP = "convert a Keras model to a verified .tflite file"
MIN_COSINE = 0.9  # the default sanity gate (edgekit.converters.export.MIN_COSINE: checked equal in the tests)


def add_parser(sub):
    p = sub.add_parser(
        "export",
        help=HELP,
        description="Convert a Keras model (.keras, .h5) or a SavedModel to .tflite, verify it (dtype audit, "
        "XNNPACK run, agreement with Keras or with TensorFlow running the SavedModel) and write it.",
    )
    p.add_argument("model", metavar="MODEL.keras")
    _conversion_flags(p.add_argument_group("conversion"))
    _data_flags(p.add_argument_group("data"))
    _verification_flags(p.add_argument_group("verification"))
    _target_flags(p.add_argument_group("target"))
    _trainable_flags(p.add_argument_group("learning on the device (docs/learning.md)"))
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, metavar="OUT.tflite")
    add_output_flags(g, "the export report as JSON", aliases=("--report",))
    add_unsafe_load(g)
    p.alias("calibration", "--data")
    p.alias("validation_data", "the test split of --data")
    p.set_defaults(run=run, quiet_native=True)
    return p


def _conversion_flags(g):
    g.add_argument(
        "--quant",
        required=True,
        metavar="MODE",
        help="float32; float16 (half-size weights); dynamic (int8 weights, float activations); int8 (full "
        "integer); int16x8 (int16 activations, int8 weights)",
    )
    g.add_argument(
        "--io",
        choices=("int8", "uint8", "int16", "float32"),
        help="input/output dtype of an integer model (int8: int8 (default), uint8 or float32; int16x8: "
        "int16 (default) or float32)",
    )
    g.add_argument(
        "--sparse", action="store_true", help="encode zero weights sparsely (for pruned models; verified under XNNPACK)"
    )
    g.add_argument(
        "--per-tensor",
        dest="per_channel",
        action="store_false",
        help="one scale per weight tensor instead of per output channel (for clustered models: a kernel's "
        "k shared values stay k values, so the file compresses better)",
    )


def _data_flags(g):
    g.add_argument(
        "--data",
        "--calib",
        dest="data",
        metavar="DATA",
        help="'digits', a .npz with x (and y) or x_train/y_train/x_test/y_test, or a directory of images: "
        "calibrates (train split) and verifies (test split); required for int8 and int16x8",
    )
    g.add_argument(
        "--calib-samples",
        type=int_at_least("--calib-samples", 1),
        default=256,
        help="calibration samples (default 256, drawn with --seed)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")


def _verification_flags(g):
    g.add_argument(
        "--min-agreement",
        type=fraction,
        metavar="F",
        help="fail (exit 1, nothing written) if top-1 agreement with Keras is below F (classifiers)",
    )
    add_task(g)
    g.add_argument(
        "--keep-float",
        metavar="auto|LAYER[,LAYER]",
        help="int8: leave these Keras layers in float, or 'auto': the most sensitive ones until --min-agreement holds",
    )
    g.add_argument(
        "--min-cosine",
        type=_cosine,
        default=MIN_COSINE,
        metavar="C|off",
        help=f"fail (exit 1) when the outputs' mean cosine to Keras is below C (integer modes; default "
        f"{MIN_COSINE}, far below what int8 rounding gives: see docs); off: no such check",
    )
    g.add_argument(
        "--no-layer-errors",
        dest="layer_report",
        action="store_false",
        help="int8: skip the per-layer quantization error measurement",
    )


def _target_flags(g):
    g.add_argument(
        "--streaming",
        action="store_true",
        help="export the recurrent model's streaming twin: one frame (--hop frames) and the recurrent state in, the "
        "output and the new state out; verified frame by frame against the whole-window model (docs/export.md)",
    )
    g.add_argument(
        "--hop", type=int_at_least("--hop", 1), default=1, metavar="N", help="--streaming: frames per invoke"
    )
    g.add_argument(
        "--target",
        choices=("litert", "mcu"),
        default="litert",
        help="mcu: the least RAM within the accuracy bound (Dense and pointwise layers per tensor where the metric "
        "holds; docs/mcu.md), then check the int8 model under TFLM (ops, arena, flash, agreement with LiteRT; see "
        "'edgekit mcu') before writing it",
    )
    g.add_argument("--board", metavar="NAME", help="--target mcu: fail unless it fits this board (see docs/mcu.md)")
    g.add_argument(
        "--ram",
        dest="ram_kb",
        type=number(0.0, 1e7, open_low=True, name="--ram"),
        metavar="KB",
        help="--target mcu: a RAM budget for the arena, KB; fail unless it fits, naming the layer where the "
        "activations peak (with --flash: another board's memory)",
    )
    g.add_argument(
        "--flash",
        dest="flash_kb",
        type=number(0.0, 1e8, open_low=True, name="--flash"),
        metavar="KB",
        help="--target mcu: another board's flash, KB (with --ram; default: no bound)",
    )
    g.add_argument(
        "--no-least-ram",
        dest="least_ram",
        action="store_false",
        help="--target mcu: keep every layer's granularity and TFLM's own memory plan (only check the file)",
    )


def _trainable_flags(g):
    g.add_argument(
        "--trainable",
        type=_trainable,
        metavar="SPEC",
        help="also export a head that trains on the device: 'head' (the last Dense layer), N (the last N Dense "
        "layers) or LAYER[,LAYER]; OUT.tflite gets the head (signatures infer, train, get_weights, set_weights; "
        "builtin ops), OUT.backbone.tflite the frozen rest in --quant",
    )
    g.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default="sgd", help="--trainable: default sgd")
    g.add_argument(
        "--train-lr", type=number(0.0, 10.0, open_low=True, name="--train-lr"), default=0.01, metavar="F",
        help="--trainable: the on-device learning rate (default 0.01)",
    )  # fmt: skip
    g.add_argument(
        "--train-batch", type=int_at_least("--train-batch", 1), default=16, metavar="N",
        help="--trainable: samples per train step (fixed in the file; default 16)",
    )  # fmt: skip
    g.add_argument(
        "--classes", type=int_at_least("--classes", 2), metavar="N",
        help="--trainable: widen a classifier head to N classes (new ones start at zero) to learn new classes",
    )  # fmt: skip


def _trainable(text: str):
    """--trainable: 'head', a number of Dense layers, or layer names."""
    import argparse

    spec = text.strip()
    if spec == "head":
        return spec
    try:
        n = int(spec)
    except ValueError:
        names = tuple(p.strip() for p in spec.split(",") if p.strip())
        if not names:
            raise argparse.ArgumentTypeError("give 'head', a number of Dense layers or layer names") from None
        return names
    if n < 1:
        raise argparse.ArgumentTypeError(f"the number of trainable Dense layers must be >= 1; received {n}")
    return n


def _run_trainable(args, model, data, backbone_options) -> int:
    from edgekit.converters.trainable import TrainableOptions, export_trainable
    from edgekit.core.errors import InputError

    if data is None:
        raise InputError("--trainable needs --data DATA: the backbone's calibration and the head's checks")
    if args.streaming:
        raise InputError("--trainable exports a head over whole inputs: drop --streaming")
    options = TrainableOptions(
        trainable=args.trainable,
        optimizer=args.optimizer,
        learning_rate=args.train_lr,
        batch_size=args.train_batch,
        classes=args.classes,
        target=args.target,  # mcu: one `step` signature that TFLM runs, its arena measured
    )
    report = export_trainable(
        model, args.output, args.quant, calibration=data, validation_data=(data.x_test, None), options=options,
        task=args.task, overwrite=args.overwrite, progress=f"export {os.path.basename(args.model)}",
        backbone_options=backbone_options,
    )  # fmt: skip
    try:
        emit(args, report)
    except BaseException:
        for path in (report.path, report.backbone_path):
            if path:
                os.unlink(path)  # all or nothing
        raise
    return EXIT_OK


def run(args) -> int:
    from edgekit.converters import ExportOptions, export
    from edgekit.core.data import check_data_spec, load_for
    from edgekit.core.errors import InputError
    from edgekit.core.modelfile import scan
    from edgekit.core.saving import load_model

    if (args.ram_kb is not None or args.flash_kb is not None) and args.board is not None:
        raise InputError("give either --board or --ram and --flash, not both")
    options = ExportOptions(
        quant=args.quant,
        io=args.io,
        sparse=args.sparse,
        per_channel=args.per_channel,
        calib_samples=args.calib_samples,
        seed=args.seed,
        min_agreement=args.min_agreement,
        keep_float=args.keep_float,
        layer_report=args.layer_report,
        min_cosine=args.min_cosine,
        target=args.target,
        board=_board(args),
        least_ram=args.least_ram,
        task=args.task,
        streaming=args.streaming,
        hop=args.hop,
    )
    check_outputs(args, [(args.output, "-o", False), (args.json, "--json", False)], [args.model, args.data])
    if options.quant.integer and not args.data:
        raise InputError(
            f"--quant {options.quant.value} needs --data DATA ('digits', a .npz or an image directory) "
            f"to calibrate activations"
        )
    scan(args.model, safe_mode=not args.unsafe_load)  # before any long work: format, limits, code
    if args.data:
        check_data_spec(args.data)
    model = load_model(args.model, safe_mode=not args.unsafe_load)
    data = load_for(args.data, model) if args.data else None
    if args.trainable is not None:
        return _run_trainable(args, model, data, options)
    report = export(
        model,
        None,
        calibration=data,
        validation_data=(data.x_test, data.y_test) if data else None,
        progress=f"export {os.path.basename(args.model)}",
        options=options,
    )
    report = report.save(args.output, overwrite=args.overwrite)
    try:
        emit(args, report)
    except BaseException:
        os.unlink(args.output)  # all or nothing
        raise
    return EXIT_OK


def _cosine(text):
    """--min-cosine: a number in [-1, 1], or 'off'."""
    return None if text == "off" else number(-1.0, 1.0, name="--min-cosine")(text)


def _board(args):
    """The board of --board, or of --ram and --flash (a custom one)."""
    if args.ram_kb is None and args.flash_kb is None:
        return args.board
    from edgekit.converters.tflm import custom_board

    return custom_board(args.ram_kb, args.flash_kb)
