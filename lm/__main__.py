"""`python -m voxtok.lm COMMAND ...` = `voxtok lm COMMAND ...` without the installed package's metadata (the entry
point that registers lm's subcommands with `voxtok` needs it; the GPU burst runs a checkout on a bare machine, through
recipes/checkout_path.sh): `python -m voxtok.lm train recipes/lm_discrete_small.toml --device cuda`."""

import argparse
import sys

from voxtok.cli import main
from voxtok.lm.commands import register

parser = argparse.ArgumentParser(prog="python -m voxtok.lm", description="the speech LM's commands (voxtok lm ...)")
register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
sys.exit(main(["lm", *sys.argv[1:]], parser))
