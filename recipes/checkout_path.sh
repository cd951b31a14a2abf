#!/usr/bin/env bash
# Make `import voxtok` work from a bare checkout (no pip install), as on a lent GPU machine: the repo keeps the
# product's layout (codec/, lm/, export/, demo/) and pyproject.toml maps it to one package, voxtok; this builds the
# same tree out of symlinks in a temporary folder and puts that folder first on PYTHONPATH.
#
#   source recipes/checkout_path.sh      # from any folder; exports PYTHONPATH
#   bash recipes/checkout_path.sh CMD…   # or run one command with it
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
voxtok_path=$(mktemp -d "${TMPDIR:-/tmp}/voxtok-path.XXXXXX")
mkdir "$voxtok_path/voxtok"
for entry in "$repo"/codec/*; do ln -s "$entry" "$voxtok_path/voxtok/$(basename "$entry")"; done
for sub in lm export demo; do ln -s "$repo/$sub" "$voxtok_path/voxtok/$sub"; done
export PYTHONPATH="$voxtok_path${PYTHONPATH:+:$PYTHONPATH}"
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ $# -gt 0 ]; then exec "$@"; fi
