# Sourced by ./run-demo and ./run-tests: make sure .venv exists with the
# project installed (plus the extras named in $EXTRAS). Works on a fresh
# Debian machine with Python 3.11; as root it installs python3-venv if the
# venv module is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        else
            echo "python3-venv is missing: run 'sudo apt-get install python3-venv' first" >&2
            exit 2
        fi
    fi
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${EXTRAS:-none}"
if [ ! -e "$stamp" ]; then
    spec="."
    [ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
