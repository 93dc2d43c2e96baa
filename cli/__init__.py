"""Command-line front end, installed as smoothprobe.cli; `run` is the `smoothprobe` command."""

from __future__ import annotations

import importlib
import sys


def run() -> None:
    """The `smoothprobe` console command. Ctrl-C in the seconds the command line takes to import
    (torch) ends as it does later: one line on stderr and exit code 130, no traceback."""
    try:
        main = importlib.import_module("smoothprobe.cli.main").main
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted (Ctrl-C)\n")
        raise SystemExit(130) from None
    main()
