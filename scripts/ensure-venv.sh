#!/usr/bin/env bash
# Create .venv when missing and install the project with its dev extra into
# it; the install is skipped while pyproject.toml is older than the stamp.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.installed

command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
# Debian ships venv's pip bootstrap in a package of its own.
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

lock venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    rm -f "$STAMP"
fi

if [ -f "$STAMP" ] && [ ! pyproject.toml -nt "$STAMP" ]; then
    exit 0
fi
log "pip install -e '.[dev]' into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e '.[dev]'
touch "$STAMP"
