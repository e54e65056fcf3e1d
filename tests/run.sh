#!/usr/bin/env bash
# The test command: sets up a fresh machine, builds the extension in place
# (tests/build.sh) and runs the suite. `bash tests/run.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider tests "$@"
