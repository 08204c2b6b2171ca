#!/usr/bin/env bash
# Creates or updates a virtualenv from a requirements file:
#   bash tests/python/venv.sh VENV_DIR REQUIREMENTS_FILE
# The one way the tests' virtualenvs are made: the test harness
# (tests/common/python.rs) runs it on first use, and .ci/run runs it before the
# tests so that a failed install is a CI error of its own, not a test failure.
# A copy of the requirements in the venv marks it complete; an edit to the file
# installs again.
set -euo pipefail
venv="$1"
requirements="$2"
stamp="$venv/requirements.installed"
if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
