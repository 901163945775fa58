"""``edgekit optimize``: a recipe (or the techniques' flags) applied to a Keras model, each step
fine-tuned, with what each achieved measured. The techniques come from the registry
(:mod:`edgekit.optimize.registry`); their flags are declared here, one table per technique
(:data:`TECHNIQUE_FLAGS`; :func:`add_technique_flags` for a technique registered since)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from edgekit.app.cli._common import EXIT_OK, add_output_flags, add_task, add_unsafe_load, check_outputs, int_at_least
from edgekit.app.cli.argtypes import at_least, fraction_open, fractions, positive

HELP = "drop blocks, channel-prune, factorize, prune, cluster, distill and/or quantization-aware train a Keras model"


@dataclass(frozen=True)
class Flag:
    """A command-line flag of a technique. ``field``: the config field it sets (None: the flag
    only turns the technique on, e.g. ``--qat``); ``kind``: the argparse type (``bool`` for a
    switch); ``enables``: giving the flag adds the step (``--qat-skip`` alone does not)."""

    name: str
    field: Optional[str]
    kind: Any = float
    help: str = ""
    metavar: Optional[str] = None
    choices: Tuple[str, ...] = ()
    append: bool = False
    enables: Any = True  # or a function of the value: whether giving it adds the step
    group: Optional[str] = None  # flags of one technique in one group exclude each other


# Each technique's flags, by technique name.
TECHNIQUE_FLAGS: Dict[str, Tuple[Flag, ...]] = {
    "depth": (
        Flag(
            "--depth",
            "keep",
            fraction_open,
            "drop repeated blocks (transformer layers), keeping KEEP of them, and distill from IN.keras",
            "KEEP",
        ),
    ),
    "channel_prune": (
        Flag(
            "--channel-prune",
            "ratio",
            fraction_open,
            "remove RATIO of the prunable channels/units (a smaller dense model; first step)",
            "RATIO",
            group="budget",
        ),
        Flag(
            "--channel-stages",
            "stages",
            fractions,
            "remove R1 of the first stage's prunable channels, R2 of the second's, ... (the model's "
            "layers in order, split into as many stages as ratios)",
            "R1,R2,...",
            group="budget",
        ),
        Flag(
            "--target-params",
            "target_params",
            at_least(1),
            "channel-prune until the model has at most N params",
            "N",
            group="budget",
        ),
        Flag(
            "--target-macs",
            "target_macs",
            at_least(1),
            "channel-prune until the model needs at most N MACs",
            "N",
            group="budget",
        ),
        Flag(
            "--target-latency",
            "target_latency",
            positive,
            "channel-prune until the int8 model's p50 latency "
            "here (device harness, XNNPACK, 1 thread) is at most MS milliseconds",
            "MS",
            group="budget",
        ),
    ),
    "factorize": (
        Flag(
            "--factorize-rank",
            "rank",
            at_least(1),
            "low-rank factorization (truncated SVD) of Dense/Conv2D layers at rank R",
            "R",
            group="rank",
        ),
        Flag(
            "--factorize-energy",
            "energy",
            fraction_open,
            "factorize each layer at the least rank keeping E of its singular-value energy",
            "E",
            group="rank",
        ),
        Flag(
            "--factorize-params",
            "target_params",
            at_least(1),
            "factorize until the model has at most N params",
            "N",
            group="rank",
        ),
    ),
    "prune": (
        Flag("--prune", "sparsity", fraction_open, "magnitude pruning to SPARSITY", "SPARSITY"),
        Flag(
            "--pattern",
            "pattern",
            str,
            "pruning pattern (default unstructured; 2:4: 2 zeros in every 4 input weights)",
            choices=("unstructured", "2:4"),
            enables=lambda v: v == "2:4",
        ),
    ),
    "cluster": (Flag("--cluster", "clusters", at_least(2), "weight clustering, K clusters", "K"),),
    "distill": (
        Flag(
            "--temperature", "temperature", positive, "distillation temperature (default 4)", metavar="T", enables=False
        ),
        Flag(
            "--alpha",
            "alpha",
            float,
            "distillation: weight of the label loss, 1-alpha on the teacher's (default 0.1)",
            metavar="A",
            enables=False,
        ),
    ),
    "qat": (
        Flag("--qat", None, bool, "quantization-aware training (last step)"),
        Flag("--qat-skip", "skip", str, "leave LAYER in float under QAT", "LAYER", append=True, enables=False),
    ),
}
# Why the flags of one group exclude each other, by technique.
EXCLUSIVE_HINTS = {"channel_prune": "a ratio, stages or one budget"}


def add_technique_flags(technique: str, *flags: Flag, exclusive_hint: str = "") -> None:
    """Give a technique registered with :func:`edgekit.optimize.register` its flags."""
    TECHNIQUE_FLAGS[technique] = tuple(flags)
    if exclusive_hint:
        EXCLUSIVE_HINTS[technique] = exclusive_hint


def technique_flags():
    """(technique, flag) of every registered technique's flags, in step order."""
    from edgekit.optimize import registry

    return [(t, f) for t in registry.techniques() for f in TECHNIQUE_FLAGS.get(t.name, ())]


def _dest(tech, flag) -> str:
    return f"technique:{tech.name}:{flag.field or flag.name}"


def add_parser(sub):
    p = sub.add_parser(
        "optimize",
        help=HELP,
        description="Apply a recipe (or technique flags) to a tf_keras model, "
        "fine-tuning after each step on DATA, and report what each step achieved, measured from the "
        "weights and on the test split.",
    )
    p.add_argument("model", metavar="IN.keras")
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, metavar="DATA", help="fine-tune data: digits, .npz or an image directory")
    g.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="OUT.tflite: exported int8 and verified (as 'edgekit export' does); OUT.keras; or a directory "
        "(a quantization-aware model is written as a SavedModel directory)",
    )
    add_output_flags(g, "the per-step, per-layer report as JSON", aliases=("--report",))
    add_task(g)
    add_unsafe_load(g)
    g = p.add_argument_group("recipe")
    g.add_argument(
        "--recipe", metavar="R.toml", help="steps in order with their fine-tune settings (see docs/optimize.md)"
    )
    for tech, flag in technique_flags():
        kwargs = {"dest": _dest(tech, flag), "help": flag.help, "default": None}
        if flag.kind is bool:
            kwargs.update(action="store_true", default=False)
        else:
            kwargs.update(type=flag.kind, metavar=flag.metavar, action="append" if flag.append else "store")
            if flag.choices:
                kwargs["choices"] = flag.choices
        g.add_argument(flag.name, **kwargs)
    g = p.add_argument_group("distillation")
    g.add_argument(
        "--distill-from",
        metavar="TEACHER.keras",
        help="every fine-tune learns from this teacher's outputs too (alone: one distill step)",
    )
    g.add_argument(
        "--distill",
        action="store_true",
        help="every fine-tune distills from IN.keras as it came in (recovery after channel pruning)",
    )
    g = p.add_argument_group("fine-tune")
    g.add_argument(
        "--epochs", type=int_at_least("--epochs", 1), default=2, help="fine-tune epochs per step (default 2)"
    )
    g.add_argument("--batch-size", type=int_at_least("--batch-size", 1), default=32, help="default 32")
    g.add_argument("--lr", type=float, default=5e-4, help="fine-tune learning rate (default 5e-4)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--allow-drop",
        action="store_true",
        help="keep a step that collapsed the model (test accuracy down by more than the larger of 10 points and "
        "half the distance to chance; an error up by more than the larger of 10%% and half the distance to a "
        "model that learned nothing) instead of failing with exit 1",
    )
    p.alias("learning_rate", "--lr")
    p.alias("teacher", "--distill-from TEACHER.keras")
    for _, flag in technique_flags():
        if flag.field and (flag.field, None) not in p.aliases:  # the first technique's flag names a field
            p.alias(flag.field, flag.name)
    p.set_defaults(run=run, quiet_native=True, parser=p)
    return p


def _configs(args):
    """The configs the technique flags give, checked for flags that exclude each other."""
    from edgekit.core.errors import InputError
    from edgekit.optimize import registry

    configs = []
    for tech in registry.techniques():
        given = [(f, getattr(args, _dest(tech, f))) for f in TECHNIQUE_FLAGS.get(tech.name, ())]
        given = [(f, v) for f, v in given if v not in (None, False, [])]
        groups = {}
        for f, _ in given:
            if f.group:
                groups.setdefault(f.group, []).append(f.name)
        for names in groups.values():
            if len(names) > 1:
                hint = EXCLUSIVE_HINTS.get(tech.name)
                raise InputError(f"give one of {', '.join(names)}" + (f": {hint}" if hint else ""))
        if not any(f.enables(v) if callable(f.enables) else f.enables for f, v in given):
            continue
        values = {f.field: tuple(v) if f.append else v for f, v in given if f.field}
        configs.append(tech.config(**values))
    return configs


def _recipe(args):
    from edgekit.core.errors import InputError
    from edgekit.optimize import DistillConfig, FineTune, Recipe, registry

    configs = _configs(args)
    if args.distill and args.distill_from:
        raise InputError("give --distill (the input model teaches) or --distill-from TEACHER.keras, not both")
    distill_values = {f.field: getattr(args, _dest(registry.get("distill"), f)) for f in TECHNIQUE_FLAGS["distill"]}
    distill = DistillConfig(**{k: v for k, v in distill_values.items() if v is not None})
    if args.recipe:
        if configs or args.distill:
            raise InputError("give either --recipe or technique flags (--channel-prune, --prune, --qat, ...), not both")
        return Recipe.from_toml(args.recipe)
    fine_tune = FineTune(args.epochs, args.batch_size, args.lr)
    teaching = args.distill or args.distill_from
    if teaching and configs:
        fine_tune = FineTune(args.epochs, args.batch_size, args.lr, distill=distill)
    elif teaching:
        configs = [distill]
    if not configs:
        names = ", ".join(f.name for _, f in technique_flags() if f.enables is True)
        raise InputError(f"nothing to do: give --recipe R.toml or at least one of {names}, --distill-from")
    return Recipe.of(configs, fine_tune)


def run(args) -> int:
    from edgekit.app.measure import int8_latency
    from edgekit.core.data import check_data_spec, load_for
    from edgekit.core.errors import InputError
    from edgekit.core.modelfile import scan
    from edgekit.core.samples import fit_inputs, input_specs, output_names, rows
    from edgekit.core.saving import check_save_path, load_keras_model, save_model
    from edgekit.optimize import optimize

    recipe = _recipe(args)
    out = args.output
    to_tflite = out.endswith(".tflite")
    if not to_tflite:
        check_save_path(out, recipe.has_qat)  # before training, not after
    check_outputs(
        args,
        [
            (out, "-o", not to_tflite and (recipe.has_qat or not out.endswith((".keras", ".h5")))),
            (args.json, "--json", False),
        ],
        [args.model, args.data, args.recipe, args.distill_from],
    )
    for path in (args.model, args.distill_from):
        if path:
            scan(path, safe_mode=not args.unsafe_load)
    check_data_spec(args.data)
    model = load_keras_model(args.model, safe_mode=not args.unsafe_load)
    teacher = load_keras_model(args.distill_from, safe_mode=not args.unsafe_load) if args.distill_from else None
    ds = load_for(args.data, model)
    from edgekit.core.task import Task, resolve

    if not ds.has_labels and resolve(model, args.task).task is not Task.RECONSTRUCTION:
        raise InputError(
            f"{args.data} has no labels (y); fine-tuning needs them (an autoencoder learns its input: --task "
            f"reconstruction)"
        )
    specs = input_specs(model)
    x_train, x_test = fit_inputs(ds.x_train, specs, "--data"), fit_inputs(ds.x_test, specs, "--data")
    say = _say(args)
    say(f"optimizing {args.model}: {recipe.describe()} on {ds.name} ({rows(x_train)} train / {rows(x_test)} test)")
    result = optimize(
        model,
        recipe,
        x_train,
        ds.y_train,
        validation_data=(x_test, ds.y_test),
        seed=args.seed,
        log=say,
        teacher=teacher,
        measure=int8_latency(x_train),
        allow_drop=args.allow_drop,
        task=args.task,
    )
    say(result.summary(name=args.parser.name))
    doc = {"model": args.model, "recipe": recipe.describe(), **result.to_dict()}
    if to_tflite:
        _export(args, result, output_names(model), (x_train, x_test, ds.y_test), doc)
        return EXIT_OK
    saved, flavour = result.model, ""
    if scan(args.model).keras3 and not recipe.has_qat and out.endswith(".keras"):
        from edgekit.core.to_keras3 import to_keras3

        saved, flavour = to_keras3(result.model), " (Keras 3, as the input; checked against the tf_keras result)"
    save_model(saved, out, overwrite=args.overwrite)
    say(f"wrote {out}{flavour}")
    _write_json(args, doc, out)
    return EXIT_OK


def _export(args, result, names: list, data: tuple, doc: dict) -> None:
    """-o OUT.tflite: the optimized model exported int8, verified on the held-out data per output."""
    from edgekit.converters import export
    from edgekit.core.task import split_outputs

    x_train, x_test, y_test = data
    several = len(names) > 1  # a QAT model's outputs are renamed: labels and tasks go by position
    report = export(
        result.model,
        None,
        calibration=x_train,
        validation_data=(x_test, split_outputs(y_test, names) if several else y_test),
        progress=f"export {os.path.basename(args.output)}",
        seed=args.seed,
        task=result.output_tasks if several else result.task,
    )
    report = report.save(args.output, overwrite=args.overwrite)
    _say(args)(report.summary())
    _write_json(args, dict(doc, export=report.to_dict()), args.output)


def _say(args):
    """Where the command's lines go: stdout, or stderr when stdout carries the JSON (--json -)."""
    stream = sys.stderr if args.json == "-" else sys.stdout
    return lambda msg: print(msg, file=stream, flush=True)


def _write_json(args, doc: dict, out: str) -> None:
    """--json: the per-step report (and the export's, for OUT.tflite); all or nothing with OUT."""
    if not args.json:
        return
    from edgekit.core.io import write_atomic

    try:
        if args.json == "-":
            print(json.dumps(doc, indent=2))
        else:
            write_atomic(args.json, json.dumps(doc, indent=2) + "\n", overwrite=args.overwrite)
            print(f"wrote {args.json}")
    except BaseException:
        if os.path.isfile(out):
            os.unlink(out)
        raise
