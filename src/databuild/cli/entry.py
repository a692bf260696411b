"""The ``databuild`` executable's entry point: import the command line without the cyclic
garbage collector, then run it.

Importing the CLI (click, Rich, pydantic models for the config, the core) creates a few
hundred thousand objects that live as long as the command; letting the collector walk them
again and again while they are being made costs ~20 ms of every command's start. They are
frozen (never scanned again) once imported, and collection resumes for what the command
itself allocates. The service stack, loaded later by the commands that run one, is imported
the same way (``main._server``). ``python -m databuild`` (``__main__``) calls ``main`` too.
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    try:
        gc.disable()
        try:
            from databuild.cli.main import main as run
        finally:
            gc.freeze()
            gc.enable()
        run()
    except KeyboardInterrupt:  # outside a command (while importing): still exit 130, quietly
        sys.exit(130)
