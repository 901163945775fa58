"""What the commands share: one-line usage errors, argument types, the flags several commands
have (benchmark settings, ``--json [PATH]``, ``--overwrite``, ``--unsafe-load``), the output check
and JSON output."""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgekit.app.cli import argtypes
from edgekit.app.cli.argtypes import at_least, number

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130


def err(msg: str) -> None:
    print(f"edgekit: {msg}", file=sys.stderr)


# Library parameters every command names in its own words: (parameter, value or None) -> words.
ALIASES = {
    ("overwrite", "True"): "--overwrite",
    ("safe_mode", "False"): "--unsafe-load",
    ("y_test", None): "the test labels of --data",
    ("validation_data", None): "the test split of --data",
    ("y", None): "the labels of --data",
}


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, pointing at --help, exit 2. It records the actions its
    arguments (and its groups' arguments) create, so a library error's parameters are named by
    this command's flags (:meth:`name`)."""

    def __init__(self, *args, **kwargs):
        self.recorded = {}  # dest -> its first action (argparse's own __init__ adds --help)
        self.options = set()  # every option string this parser takes
        self.commands = {}  # name -> the parser of a subcommand (edgekit device setup)
        self.aliases = dict(ALIASES)
        super().__init__(*args, **kwargs)

    def error(self, message):
        err(f"error: {message} (see '{self.prog} --help')")
        sys.exit(EXIT_USAGE)

    def add_argument(self, *args, **kwargs):
        return self._record(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def add_argument(*a, **k):
            return self._record(add(*a, **k))

        group.add_argument = add_argument
        return group

    def _record(self, action):
        if action.option_strings:
            self.recorded.setdefault(action.dest, action)
            self.options.update(action.option_strings)
        return action

    def alias(self, param: str, words: str, value: str = None) -> None:
        """Name library parameter ``param`` (``=value``) with ``words`` in this command's errors."""
        self.aliases[(param, value)] = words

    def name(self, param: str, value=None) -> str:
        """A library parameter (with the value a message gives it) in this command's words: its
        alias, else the flag whose destination it is (``min_agreement`` -> ``--min-agreement``,
        ``per_channel=False`` -> ``--per-tensor``), else as Python names it."""
        from edgekit.core.errors import python_name

        for key in ((param, value), (param, None)):
            if key in self.aliases:
                words = self.aliases[key]
                return words if value is None or key[1] is not None else f"{words} {value.strip(chr(39))}"
        action = self.recorded.get(param)
        if action is None:
            return python_name(param, value)
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if value is None:
            return flag
        if action.nargs == 0:  # a switch: the flag that sets this value, or the default
            return flag if value == repr(action.const) else f"no {flag}"
        return f"{flag} {value.strip(chr(39))}"


def int_at_least(name: str, low: int):
    """An argparse type: an integer >= ``low``, with an error naming the flag."""
    return at_least(low, name)


fraction = argtypes.fraction
seconds = number(0.0, 86400.0, open_low=True, name="--duration")  # (0 s, 1 day]


def thread_list(text):
    """--threads: one count or a comma list (a sweep)."""
    values = [int_at_least("--threads", 1)(t.strip()) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"--threads must be a count or a comma list, received '{text}'")
    return values


def add_bench_flags(p, runs=100, warmup=10, sweep=False):
    g = p.add_argument_group("benchmark")
    g.add_argument(
        "--runs", type=int_at_least("--runs", 1), default=runs, help=f"timed invokes per model (default {runs})"
    )
    g.add_argument(
        "--warmup",
        type=int_at_least("--warmup", 0),
        default=warmup,
        help=f"untimed invokes before timing (default {warmup})",
    )
    if sweep:
        g.add_argument(
            "--threads",
            type=thread_list,
            default=[1],
            metavar="N[,N...]",
            help="interpreter threads; a comma list sweeps them (default 1)",
        )
    else:
        g.add_argument(
            "--threads", type=int_at_least("--threads", 1), default=1, help="interpreter threads (default 1)"
        )
    return g


def add_output_flags(g, json_help="the result as JSON", aliases=()):
    """``--json [PATH]`` (no PATH or '-': stdout; ``aliases``: its older names) and ``--overwrite``."""
    g.add_argument(
        "--json",
        *aliases,
        dest="json",
        nargs="?",
        const="-",
        metavar="PATH",
        help=f"write {json_help} to PATH ('-' or no PATH: stdout, nothing else on stdout)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace existing output files")


def add_task(g):
    g.add_argument(
        "--task",
        type=argtypes.task,
        metavar="TASK",
        help="classification, regression or reconstruction (NAME=TASK,... per output of a model with several): what "
        "the model is for, which decides how it is fine-tuned and verified (default: from the loss it was compiled "
        "with, its output, or real-valued targets in DATA; see docs/tasks.md)",
    )


def add_unsafe_load(g):
    g.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load model files that would run Python code (Lambda layers, unknown modules): only for files you trust",
    )


def check_outputs(args, outputs, inputs=()):
    """Check every output of a command under edgekit's output policy before any work: each is
    new (or ``--overwrite``), none is an input, no two are the same file. ``outputs`` are
    (path, what, is a directory) triples; None and '-' paths are skipped."""
    from edgekit.core.errors import InputError
    from edgekit.core.io import check_output

    given = [(p, w, d) for p, w, d in outputs if p is not None and p != "-"]
    seen = {}
    for path, what, directory in given:
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(f"{what} and {seen[key]} name the same file ({path}); give each its own name")
        seen[key] = what
        check_output(
            path,
            overwrite=getattr(args, "overwrite", False),
            what=what,
            directory=directory,
            inputs=[i for i in inputs if i],
        )
    for i in inputs:
        if i and os.path.abspath(i) in seen:
            raise InputError(f"{seen[os.path.abspath(i)]} {i} is also an input; give the output its own name")


def emit(args, result, summary: str = None, doc: dict = None) -> None:
    """Print a result: its JSON on stdout with ``--json`` / ``--json -``; otherwise its summary, and
    with ``--json PATH`` the JSON written to PATH too."""
    from edgekit.core.io import write_atomic

    doc = doc if doc is not None else result.to_dict()
    path = getattr(args, "json", None)
    if path == "-":
        print(json.dumps(doc, indent=2))
        return
    print(summary if summary is not None else result.summary())
    if path:
        write_atomic(path, json.dumps(doc, indent=2) + "\n", overwrite=getattr(args, "overwrite", False))
        print(f"wrote {path}")
