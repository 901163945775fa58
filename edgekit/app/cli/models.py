"""``edgekit models``: the registered architectures with params, MACs and int8 size."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_OK, add_output_flags, check_outputs

HELP = "registered architectures with params, MACs and int8 size"


def add_parser(sub):
    p = sub.add_parser(
        "models",
        help=HELP,
        description="List the registered model builders with the parameters, MACs, peak int8 activation memory, "
        "estimated int8 .tflite size and TFLM tensor arena of each preset (profiled from the built model).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every registered one)")
    p.add_argument("--preset", choices=("reference", "digits"), default=None, help="only this preset (default both)")
    g = p.add_argument_group("output")
    g.add_argument("--markdown", action="store_true", help="print a Markdown table")
    add_output_flags(g, "the rows")
    p.set_defaults(run=run, quiet_native=True)
    return p


def models_table(preset=None, markdown: bool = False, rows=None) -> str:
    """The registered models with params, MACs, peak int8 activations and estimated int8 size."""
    from edgekit.core.results import table

    rows = rows if rows is not None else model_rows(preset)
    return table(
        ("model", "preset", "input", "params", "MACs", "peak act. int8", "int8 .tflite est.", "TFLM arena est."),
        [
            [
                r["name"],
                r["preset"],
                "x".join(map(str, r["input_shape"])),
                f"{r['params']:,}",
                f"{r['macs'] / 1e6:,.1f}M",
                f"{r['peak_activation_bytes_int8'] / 1024:,.1f} KiB",
                f"{r['int8_bytes_estimate'] / 1024:,.1f} KiB",
                f"{r['tflm_arena_estimate'] / 1024:,.1f} KiB",
            ]
            for r in rows
        ],
        markdown=markdown,
        align="lllrrrrr",
    )


def model_rows(preset=None, names=()) -> list:
    """A row per registered model (or per one of ``names``) and preset, profiled from the built model."""
    from edgekit.core.errors import InputError
    from edgekit.models import available, create, profile

    unknown = [n for n in names if n not in available()]
    if unknown:
        raise InputError(f"unknown model '{unknown[0]}'; available: {', '.join(available())}")
    rows = []
    for name in names or available():
        for p_name in [preset] if preset else ["reference", "digits"]:
            model = create(name, preset=p_name)
            p = profile(model, dtype_bytes=1)  # params and MACs do not depend on the dtype
            rows.append(
                {
                    "name": name,
                    "preset": p_name,
                    "params": p.params,
                    "macs": p.macs,
                    "input_shape": list(model.input_shape[1:]),
                    "peak_activation_bytes_int8": p.peak_activation_bytes,
                    "int8_bytes_estimate": p.int8_bytes,
                    "tflm_arena_estimate": p.arena_estimate_bytes,
                }
            )
    return rows


def run(args) -> int:
    from edgekit.app.cli._common import emit

    check_outputs(args, [(args.json, "--json", False)])
    rows = model_rows(args.preset, args.names)
    emit(args, None, models_table(rows=rows, markdown=args.markdown), {"models": rows})
    return EXIT_OK
