"""``edgekit profile``: per-layer params, MACs and activation memory of a model."""

from __future__ import annotations

import os

from edgekit.app.cli._common import EXIT_OK, add_output_flags, add_unsafe_load, check_outputs, emit

HELP = "per-layer params, MACs and activation memory of a model"


def add_parser(sub):
    p = sub.add_parser("profile", help=HELP, description="Profile a registered model (by name) or a saved Keras model.")
    p.add_argument("model", metavar="NAME|MODEL.keras")
    p.add_argument(
        "--preset",
        choices=("reference", "digits"),
        default="reference",
        help="preset of a registered model (default reference)",
    )
    p.add_argument("--int8", action="store_true", help="count 1-byte activations (default 4)")
    g = p.add_argument_group("output")
    add_output_flags(g, "the profile")
    add_unsafe_load(g)
    p.set_defaults(run=run, quiet_native=True)
    return p


def run(args) -> int:
    from edgekit.models import available, create, profile

    check_outputs(args, [(args.json, "--json", False)], [args.model])
    if args.model in available():
        model = create(args.model, preset=args.preset)
    else:
        from edgekit.core.errors import InputError
        from edgekit.core.saving import load_keras_model

        if not os.path.exists(args.model):
            raise InputError(
                f"'{args.model}' is neither a registered model ({', '.join(available())}) nor an existing .keras file"
            )
        model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    emit(args, profile(model, dtype_bytes=1 if args.int8 else 4))
    return EXIT_OK
