"""Argument types for flags (argparse ``type=`` functions), shared by the command line and the
technique registry's flags: each checks one range and says what it received."""

from __future__ import annotations

import argparse
import math


def number(
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    integer: bool = False,
    name: str = "",
):
    """A number in [low, high] (an end excluded with ``open_low``/``open_high``), an integer with
    ``integer``. ``name`` starts the message (``--runs must be >= 1``)."""
    what = f"{name} " if name else ""

    def parse(text):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{what}must be {kind}, received '{text}'") from None
        too_low = value <= low if open_low else value < low
        too_high = value >= high if open_high else value > high
        if too_low or too_high or (not integer and not math.isfinite(value)):
            if math.isinf(high):
                bound = f"> {low:g}" if open_low else f">= {low:g}"
            else:
                bound = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"{what}must be {bound}, received {text if integer else value}")
        return value

    return parse


def at_least(low: int, name: str = ""):
    """An integer >= ``low``."""
    return number(low, integer=True, name=name)


fraction = number(0.0, 1.0)  # [0, 1]
fraction_open = number(0.0, 1.0, open_low=True, open_high=True)  # (0, 1)
positive = number(0.0, open_low=True)  # > 0


def fractions(text):
    """Comma-separated shares in [0, 1): ``0.3,0.5,0.8``."""
    share = number(0.0, 1.0, open_high=True)
    return tuple(share(part.strip()) for part in text.split(","))


TASKS = ("classification", "regression", "reconstruction")


def task(text):
    """``--task``: one task for every output, or ``NAME=TASK,...`` per output."""
    parts = [p.strip() for p in text.split(",")] if "=" in text else [text.strip()]
    for part in parts:
        kind = part.split("=", 1)[-1].strip()
        if kind not in TASKS or ("=" in text and not part.split("=", 1)[0].strip()):
            raise argparse.ArgumentTypeError(
                f"--task must be one of {', '.join(TASKS)}, or NAME=TASK,... per output; received '{text}'"
            )
    return text.strip()
