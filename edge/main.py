"""What ``python -m tidefield.edge`` and ``tidefield edge`` run; the only place the edge
configures logging.

``run`` validates the config in a child process (``check --json``: pydantic, YAML and the
site registry load there, and go away with it), then runs the agent on the validated
config. The agent process never imports them: about 15 MB less resident memory for as
long as it runs.

Exit status: 0 after a clean stop, 1 when the agent cannot start (the queue cannot be
opened...), 2 when the config is invalid.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymodbus logs every failed request at ERROR; our drivers report each failure once,
    # with the device and the backoff, so its own lines are noise unless debugging.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def check(config_path: Path | str, *, as_json: bool = False) -> int:
    """Validate a config file; print what is wrong (or, with ``as_json``, the validated
    config for ``run``)."""
    from .config import load_config, to_json
    from .errors import ConfigError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if as_json:
        print(to_json(config))
    else:
        print(f"{config_path}: ok (site {config.site}, {len(config.drivers)} drivers, "
              f"queue {config.queue.path})")
    return EXIT_OK


def run(config_path: Path | str, log_level: str | None = None,
        healthy_file: Path | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT."""
    from .config import from_json
    from .errors import EdgeError

    checked = subprocess.run([sys.executable, "-m", "tidefield.edge", "check", "--json",
                              "--config", str(config_path)], capture_output=True, text=True)
    if checked.returncode != EXIT_OK:
        sys.stderr.write(checked.stderr)
        return checked.returncode
    config = from_json(checked.stdout)
    configure_logging(log_level or config.log_level)
    from .agent import Agent

    try:
        agent = Agent(config, healthy_file)
    except EdgeError as exc:
        logging.getLogger("tidefield.edge").error("cannot start: %s", exc)
        return EXIT_FAILED
    return agent.run()
