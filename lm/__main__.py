"""`python -m lm COMMAND ...` = `voxtok lm COMMAND ...` from a checkout that is not pip-installed (the entry point
that registers lm's subcommands with `voxtok` needs the installed package's metadata; the GPU burst runs on a bare
machine): `python -m lm train recipes/lm_discrete_small.toml --device cuda`."""

import argparse
import sys

from codec.cli import main
from lm.commands import register

parser = argparse.ArgumentParser(prog="python -m lm", description="the speech LM's commands (voxtok lm ...)")
register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
sys.exit(main(["lm", *sys.argv[1:]], parser))
