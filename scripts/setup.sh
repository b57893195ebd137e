#!/usr/bin/env bash
# Sets up .venv with everything dualbench needs, on a fresh machine with Python 3.11.
#   bash scripts/setup.sh          # the package and its dependencies
#   bash scripts/setup.sh --test   # + test tools and the headless browser for the report test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch/torchvision: the builds that install here; keep an existing (e.g. CUDA-matched) install.
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || "${pip[@]}" torch==2.14.1 torchvision==0.29.1
if [ $with_test = 1 ]; then "${pip[@]}" -e ".[test]"; else "${pip[@]}" -e .; fi
# AMT-S (motion smoothness) is defined in the vbench wheel; its pins conflict with this stack,
# so it is installed without dependencies and only its network definition is imported.
"${pip[@]}" --no-deps "vbench==0.1.5"

if [ $with_test = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The HTML report test renders the page in Debian's headless Chromium.
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the report browser test will fail" >&2
  fi
fi
echo "dualbench is set up in .venv"
