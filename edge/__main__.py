"""``python -m tidefield.edge run --config edge.yaml``: the agent with the smallest footprint
(argparse, no Typer); what the systemd unit runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidefield.edge",
                                     description="Tidefield edge agent")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent until SIGTERM or SIGINT")
    run.add_argument("--config", required=True, help="the agent's YAML config")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="overrides log_level of the config")
    run.add_argument("--healthy-file", type=Path,
                     help="written once the agent is up (the launcher's health check)")
    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("--config", required=True)
    check.add_argument("--json", action="store_true",
                       help="print the validated config as JSON (what `run` reads)")
    args = parser.parse_args(argv)

    from . import main as entry

    if args.command == "check":
        return entry.check(args.config, as_json=args.json)
    return entry.run(args.config, args.log_level, args.healthy_file)


if __name__ == "__main__":
    sys.exit(main())
