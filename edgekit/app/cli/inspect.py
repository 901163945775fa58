"""``edgekit inspect``: ops, tensor dtypes and where the bytes of a .tflite file go."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_OK, add_output_flags, check_outputs, emit

HELP = "ops, tensor dtypes and size of a .tflite file"


def add_parser(sub):
    p = sub.add_parser(
        "inspect",
        help=HELP,
        description="Read a .tflite file: ops with their dtypes and MACs, where the "
        "bytes go, and whether it is fully integer.",
    )
    p.add_argument("model", metavar="MODEL.tflite")
    p.add_argument("--tensors", action="store_true", help="also list every tensor with its bytes")
    add_output_flags(p.add_argument_group("output"), "every op and tensor")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from edgekit.converters.inspection import inspect_tflite

    check_outputs(args, [(args.json, "--json", False)], [args.model])
    info = inspect_tflite(args.model)
    emit(args, info, f"{args.model}\n{info.summary(tensors=args.tensors)}", {"model": args.model, **info.to_dict()})
    return EXIT_OK
