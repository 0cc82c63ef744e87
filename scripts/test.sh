#!/usr/bin/env bash
# Install what the tests need (system packages, Python and Node deps, the VM runtime
# artifact) and run the whole suite. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive
echo "==> system packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    busybox-static e2fsprogs erofs-utils qemu-system-x86 qemu-utils cpio uidmap passt nftables ca-certificates python3-venv \
    bubblewrap runc crun docker-registry skopeo umoci apache2-utils tmux hyperfine criu chromium fontconfig \
    linux-source-6.1 flex bison bc libelf-dev libssl-dev make gcc xz-utils unzip \
    >/dev/null

echo "==> python packages"
$PY -m pip install -q --disable-pip-version-check -e ".[cli,server,test,dev]"
# The Node tests start `python -m boxlite.server` themselves: same interpreter, by absolute path.
PY_ABS=$($PY -c 'import sys; print(sys.executable)')

echo "==> VM runtime artifact (cached by input hash; the kernel build runs once per config)"
make runtime PYTHON="$PY"

if [ -f sdks/node/package.json ]; then
    echo "==> node packages"
    (cd sdks/node && npm ci --no-audit --no-fund --loglevel=error)
fi

failed=()
echo "==> lint"
$PY -m ruff check src tests bench || failed+=(ruff)
$PY -m ruff format --check src tests bench || failed+=(ruff-format)
$PY -m mypy || failed+=(mypy)
bash .github/scripts/actionlint.sh || failed+=(actionlint)

echo "==> tests"
# Any non-zero pytest exit fails the run, 5 (no tests collected) included. A fresh base directory
# per run: pytest's own clean-up of earlier numbered runs recurses (RecursionError at exit) into
# the 1,000-level trees the copy tests build when a killed run left one; rm -rf does not.
# pytest's own summary lines are kept and printed again at the very end: CI shows the tail of the
# log, and the Node tests' output would otherwise push the names of failed tests out of it.
# Two workers (pytest-xdist; BOXLITE_TEST_WORKERS=0 runs in one process): one worker left both
# cores half idle, since many tests wait on a box, a deadline or a peer. A file stays on one
# worker (tests/conftest.py). The tests marked `ray` then run alone: a Ray cluster's health checks
# declare a node dead after ~3 s without an answer, which a fully loaded machine can exceed. With
# arguments (a selection of tests) there is one run. The slowest tests are listed after each run.
# Short: pytest-xdist adds popen-gwN/ to it, and a unix socket path holds 107 bytes at most.
basetemp=$(mktemp -d /tmp/bxt.XXXXXX)
pytest_log=$(mktemp /tmp/boxlite-pytest-log.XXXXXX)
trap 'rm -f "$pytest_log"' EXIT
run_pytest() {
    BOXLITE_TEST_ENGINES=${BOXLITE_TEST_ENGINES:-namespace,vm} $PY -m pytest -q -rfE -p no:cacheprovider \
        --basetemp="$basetemp/$1" --durations=30 "${@:2}" 2>&1 | tee -a "$pytest_log"
}
workers=(-n "${BOXLITE_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder)
if [ $# -gt 0 ]; then
    run_pytest a "${workers[@]}" "$@" || failed+=(pytest)
else
    run_pytest m "${workers[@]}" -m "not ray" || failed+=(pytest)
    # The Ray clusters of the benchmark's smoke test and of test_cli_ray.py run under a subreaper
    # (tests/support/reaper.py) that ends all their processes, so the cluster tests, which
    # refuse to start beside any Ray process, can follow them in one run.
    run_pytest r -m ray || failed+=(pytest-ray)
fi
rm -rf "$basetemp"

if [ -f sdks/node/package.json ]; then
    echo "==> node tests"
    (cd sdks/node && BOXLITE_PYTHON="$PY_ABS" npm test) || failed+=(node)
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "==> pytest summary (repeated from above)"
    grep -E '^(FAILED|ERROR) |^=+ .*(passed|failed|error).* =+$' "$pytest_log" | tail -40 || true
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all checks passed"
