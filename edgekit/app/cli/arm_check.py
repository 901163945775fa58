"""``python -m edgekit.app.cli.arm_check MODELS --inputs X.npz``: the models' raw outputs on ARM64 under
QEMU (Pi 4 and Pi 5 CPUs) against this machine's (``make arm-check``)."""

from __future__ import annotations

import argparse
import sys

from edgekit.core.results import table
from edgekit.device.board.errors import BoardError
from edgekit.device.host.qemu import CPUS, check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgekit.app.cli.arm_check",
        description="Compare .tflite outputs on ARM64 (QEMU) with this machine's.",
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--inputs", required=True, help=".npz with x")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--cpu", action="append", choices=CPUS, help="default: all of " + ", ".join(CPUS))
    parser.add_argument(
        "--strict",
        action="store_true",
        help="integer outputs must be bit-identical to x86 too (not only across ARM CPUs)",
    )
    args = parser.parse_args(argv)
    try:
        rows = check(args.models, args.inputs, args.cpu or CPUS, args.samples, args.strict)
    except BoardError as exc:
        print(f"arm-check: error: {exc}", file=sys.stderr)
        return 2
    print(
        table(
            (
                "model",
                "CPU (board)",
                "against",
                "output",
                "bit-identical",
                "samples differing",
                "max |diff|",
                "top-1 same",
                "result",
            ),
            [
                [
                    r["model"],
                    f"{r['cpu']} ({r['board']})",
                    r["against"],
                    r["dtype"],
                    "yes" if r["identical"] else "no",
                    f"{r['differing_samples']}/{r['samples']}",
                    f"{r['max_abs_diff']:.3g}",
                    f"{r['top1_agreement']:.4f}",
                    "ok" if r["ok"] else "FAILED",
                ]
                for r in rows
            ],
        )
    )
    failed = [r for r in rows if not r["ok"]]
    print(
        f"arm-check: {len(rows) - len(failed)}/{len(rows)} comparisons pass (x86 vs ARM64 under QEMU "
        f"{', '.join(args.cpu or CPUS)})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
