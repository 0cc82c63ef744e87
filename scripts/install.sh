#!/usr/bin/env bash
# Install BoxLite and everything it needs on Debian 12, then run a first box.
#
#   bash scripts/install.sh                # system packages + Python package + a first box
#   bash scripts/install.sh --python-only  # only the venv + Python package + the command on PATH
#
# The Python package goes into its own virtual environment, never into the system interpreter
# (Debian's /usr/bin/python3 refuses `pip install` there: PEP 668, externally-managed-environment):
#   BOXLITE_VENV    the venv (default: /opt/boxlite/venv as root, ~/.local/share/boxlite/venv otherwise)
#   PYTHON          the interpreter that creates it (default: /usr/bin/python3 if present, else python3)
#   BOXLITE_BIN_DIR where the `boxlite` command is linked (default: /usr/local/bin as root, ~/.local/bin otherwise)
# The checkout is installed as a regular (non-editable) package, so the venv does not depend on
# the checkout staying where it is. A VM runtime artifact built before (`make runtime`,
# target/boxlite-runtime) is copied into the installed package (setup.py's build_py); after
# rebuilding it, run `scripts/install.sh --python-only` again. For development use an editable
# install instead (`make dev:python`).
#
# Works offline apart from Debian's package mirror and PyPI: the first box's image is built
# from Debian packages (busybox-static + python3), not pulled from a container registry.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

python_only=0
for arg in "$@"; do
    case $arg in
        --python-only) python_only=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" = 0 ]; then
    VENV=${BOXLITE_VENV:-/opt/boxlite/venv}
    BIN_DIR=${BOXLITE_BIN_DIR:-/usr/local/bin}
else
    VENV=${BOXLITE_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/boxlite/venv}
    BIN_DIR=${BOXLITE_BIN_DIR:-$HOME/.local/bin}
fi
VENV=$(realpath -m -- "$VENV")
BIN_DIR=$(realpath -m -- "$BIN_DIR")
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x /usr/bin/python3 ]; then
    PY=/usr/bin/python3
else
    PY=python3
fi

system_packages() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "install.sh: installing Debian packages needs root: run this as root," >&2
            echo "  or install them yourself and run: bash scripts/install.sh --python-only" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "==> system packages"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        busybox-static e2fsprogs erofs-utils qemu-system-x86 qemu-utils cpio \
        uidmap passt nftables ca-certificates python3-venv >/dev/null
}

# The venv + pip step: needs no apt and no box, so tests run it alone (--python-only).
python_package() {
    echo "==> python package into $VENV (created with $PY)"
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "install.sh: $PY cannot create a virtual environment (no ensurepip/venv module);" >&2
        echo "  on Debian: apt-get install python3-venv" >&2
        exit 1
    fi
    if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV")" ]; then
        echo "install.sh: $VENV exists and is not a virtual environment; refusing to write into it" >&2
        echo "  (choose another directory with BOXLITE_VENV)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # --upgrade: a re-run installs the checkout as it is now (same version number or not).
    (cd / && "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "${ROOT}[cli,server]")

    mkdir -p "$BIN_DIR"
    ln -sfn "$VENV/bin/boxlite" "$BIN_DIR/boxlite"
    echo "    command: $BIN_DIR/boxlite -> $VENV/bin/boxlite"
    local found
    found=$(command -v boxlite || true)
    if [ "$found" != "$BIN_DIR/boxlite" ]; then
        echo "    note: \`boxlite\` on your PATH is ${found:-not found}; add $BIN_DIR to PATH (before other entries)"
    fi
    echo "    python: $VENV/bin/python (or: source $VENV/bin/activate)"
    (cd / && "$VENV/bin/python" - <<'PYEOF'
from boxlite.errors import EngineError
from boxlite.runtime_artifact import locate

try:
    print(f"    VM runtime artifact: {locate().path}")
except EngineError:
    print("    VM runtime artifact: none (VM boxes need `make runtime`, then `scripts/install.sh --python-only`)")
PYEOF
    )
}

first_box() {
    if [ "$(id -u)" != 0 ]; then
        echo "==> first box: skipped (boxes need root on the host); as root: $VENV/bin/boxlite run ..."
        return
    fi
    echo "==> first box (default image built from Debian packages; takes ~20 s the first time)"
    (cd / && "$VENV/bin/python" - <<'PYEOF'
import asyncio, time
import boxlite

async def main() -> None:
    t = time.monotonic()
    runtime = boxlite.Boxlite.default()
    box = await runtime.create(boxlite.BoxOptions())  # the default Debian image
    async with box:
        for argv in (["python3", "-c", "import platform, os; print('hello from', platform.node(), 'pid', os.getpid())"],
                     ["sh", "-c", "echo kernel $(uname -r); id"]):
            execution = await box.exec(argv[0], argv[1:], stdin=False)
            print((await execution.stdout().read()).strip())
    await runtime.shutdown()
    print(f"first box done in {time.monotonic() - t:.1f}s")

asyncio.run(main())
PYEOF
    )
}

if [ "$python_only" = 0 ]; then
    system_packages
fi
python_package
if [ "$python_only" = 0 ]; then
    first_box
fi
