#!/usr/bin/env bash
# CMake 3.22 (what JetPack 6's Ubuntu 22.04 ships) in a scratch venv outside the repository, for
# tests/csrc/test_tensorrt_cmake.py. Idempotent: reuses an existing 3.22. Prints the cmake path;
# export it as EDGEGATE_CMAKE_322 (the tests also look in /tmp/cmake322, the default here).
#   EDGEGATE_CMAKE_322=$(scripts/ci_cmake322.sh) pytest -m '' tests/csrc
set -euo pipefail
VENV=${CMAKE_322_VENV:-/tmp/cmake322}
CMAKE="$VENV/bin/cmake"
if ! "$CMAKE" --version 2>/dev/null | head -1 | grep -q '^cmake version 3\.22\.'; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet 'cmake==3.22.*' >&2
fi
"$CMAKE" --version | head -1 | grep -q '^cmake version 3\.22\.' || {
  echo "ci_cmake322.sh: $CMAKE is not CMake 3.22" >&2
  exit 1
}
echo "$CMAKE"
