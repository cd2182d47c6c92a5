#!/usr/bin/env python3
"""Run python-paillier 1.5's real `pheutil` command line (phe.command_line.cli).

The interoperability tests call this instead of the `pheutil` console script so
that only a Python interpreter with `phe` and `click` installed is needed, and
so that `python -m` does not warn about re-importing the module.
"""
import sys

from phe.command_line import cli

if __name__ == "__main__":
    sys.exit(cli(prog_name="pheutil"))
