#!/usr/bin/env bash
# The docs command: installs the pinned docs requirements and builds the site
# (docs/mkdocs.yml) into build/docs-site/ with mkdocs --strict, so any warning
# fails it: a broken internal link or anchor, a page left out of the nav, a
# missing cross-reference, a NOTE the source does not define (docs/hooks.py).
# Before that, docs/check_api.py fails on a public name without a docstring
# or an API page; after it, a self-check builds a copy of the site with one
# broken link and requires that build to fail, so the strictness is proven on
# every run. Needs the package importable (tests/build.sh builds it in place).
#   `bash docs/build.sh`;  LRSCHED_SKIP_INSTALL=1 skips the pip step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export NO_MKDOCS_2_WARNING=1   # mkdocs-material's banner about mkdocs 2.0, not about this site

if [ "${LRSCHED_SKIP_INSTALL:-0}" != "1" ]; then
  "$PY" -m pip install -q --disable-pip-version-check -r docs/requirements.txt
fi

echo "-- docs: public names (docs/check_api.py) --"
PYTHONPATH=. "$PY" docs/check_api.py --self-test

echo "-- docs: mkdocs build --strict --"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/lrsched_fused-docs.XXXXXX")
probe_config=docs/.strict-self-check.yml
trap 'rm -rf "$scratch" "$probe_config"' EXIT
# (not --quiet: it hides the warnings from the strict count as well)
if ! "$PY" -m mkdocs build --strict -f docs/mkdocs.yml > "$scratch/build.log" 2>&1; then
  grep -v '^INFO' "$scratch/build.log" >&2 || true
  echo "docs: FAILED: mkdocs build --strict (warnings above)" >&2
  exit 1
fi
echo "docs: built build/docs-site/index.html"

echo "-- docs: self-check, a broken internal link must fail the strict build --"
mkdir -p "$scratch/pages"
printf '# Probe\n\nA link to [a page that does not exist](no-such-page.md).\n' > "$scratch/pages/index.md"
# The real config (INHERIT), with only the pages, the nav and the output
# replaced; it sits beside the real one so that its relative paths (hooks,
# griffe extension) resolve alike.
cat > "$probe_config" <<YAML
INHERIT: mkdocs.yml
docs_dir: $scratch/pages
site_dir: $scratch/site
nav:
  - Probe: index.md
YAML
if "$PY" -m mkdocs build --strict -f "$probe_config" > "$scratch/log" 2>&1; then
  cat "$scratch/log"
  echo "docs: FAILED self-check: the strict build passed with a broken link" >&2
  exit 1
fi
if ! grep -q "no-such-page.md" "$scratch/log"; then
  cat "$scratch/log"
  echo "docs: FAILED self-check: the strict build failed, but not on the broken link" >&2
  exit 1
fi
echo "docs: self-check passed (a broken link fails the strict build: $(grep -m1 'no-such-page.md' "$scratch/log" | sed 's/^ *//'))"
