#!/usr/bin/env bash
# The test command: sets up a fresh machine, builds the extension in place
# (tests/build.sh) and runs the suite. `bash tests/run.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh
# A basetemp of its own: pytest's default one is shared by every pytest run
# of the user, and a concurrent run's cleanup may remove a live directory
# (tests/test_distributed.py's ranks meet through a file in it).
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/lrsched_fused-tests.XXXXXX")
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider --basetemp "$basetemp" tests "$@"
