"""``edgekit device setup``: a venv with the harness's needs on a board over SSH."""

from __future__ import annotations

from edgekit.app.cli._common import EXIT_OK, Parser

HELP = "prepare a board for 'edgekit bench --host'"


def add_parser(sub):
    p = sub.add_parser("device", help=HELP)
    dsub = p.add_subparsers(dest="device_command", metavar="COMMAND", parser_class=Parser)
    dsub.required = True
    d = dsub.add_parser(
        "setup",
        help="create a venv with numpy + ai-edge-litert on a board over SSH",
        description="Create (or update) a venv on the board with the harness's only needs, numpy and "
        "ai-edge-litert, and check they import.",
    )
    d.add_argument("host", metavar="USER@BOARD[:PORT]")
    d.add_argument(
        "--venv",
        default=".edgekit/venv",
        help="venv path on the board, relative to the home directory (default .edgekit/venv)",
    )
    d.add_argument("--python", default="python3", help="the board's python that creates the venv (default python3)")
    d.add_argument("--ssh-config", metavar="FILE", help="OpenSSH client config file (ssh -F)")
    d.set_defaults(run=run)
    p.commands["setup"] = d
    return p


def run(args) -> int:
    from edgekit.device import setup

    print(f"creating a venv with numpy + ai-edge-litert on {args.host} ({args.venv}) ...", flush=True)
    info = setup(args.host, venv=args.venv, python=args.python, ssh_config=args.ssh_config)
    print(
        f"{args.host}: python {info['python']}, numpy {info['numpy']}, ai-edge-litert {info['litert']} "
        f"in {info['venv']}"
    )
    hint = "" if args.venv == ".edgekit/venv" else f" --remote-python {info['venv']}/bin/python"
    print(f"next: edgekit bench MODEL.tflite --host {args.host}{hint}")
    return EXIT_OK
