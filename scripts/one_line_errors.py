"""Command-line errors as one ``error: ...`` line and exit status 2, for the project's scripts.

argparse prints its usage block before the error and exits by itself; ``OneLineErrorParser`` raises
``UsageError`` instead, so a script can report every bad command line, argparse's and its own checks', the same way.
"""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A bad command line: reported as one ``error:`` line, exit status 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


__all__ = ["OneLineErrorParser", "UsageError"]
