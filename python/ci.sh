#!/usr/bin/env bash
# Builds the Python package into a venv of its own and runs its tests. Needs python3 (>= 3.9, with
# venv and pip), cargo, and PyPI for the pinned tools in requirements-dev.txt.
#   python/ci.sh                      venv in target/python-venv (reused when it is there)
#   INCEPT_PY_VENV=/tmp/v python/ci.sh
#   INCEPT_PY_PROFILE=dev python/ci.sh   build with the workspace's dev profile: the package is a
#                                        workspace member, so this reuses what `cargo test
#                                        --workspace` compiled (.ci/run does this); the default
#                                        is a release build, as `pip install ./python` makes
set -euo pipefail
cd "$(dirname "$0")"

venv="${INCEPT_PY_VENV:-$PWD/../target/python-venv}"
profile="${INCEPT_PY_PROFILE:-release}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# A wheel installed like a user's, rather than `maturin develop`, which would put the native
# module into the source folder.
wheels="$PWD/../target/python-wheels"
rm -rf "$wheels"
start=$(date +%s)
"$venv/bin/maturin" build --profile "$profile" --out "$wheels"
echo "python package: $profile build took $(( $(date +%s) - start )) s"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl

# From tests/, so that the source folder incept/ (which has no native module) is not on sys.path.
cd tests
"$venv/bin/python" -m pytest -p no:cacheprovider -q
