#!/usr/bin/env bash
# Install BoxLite and everything it needs on Debian 12, then run a first box.
# Works offline apart from Debian's package mirror and PyPI: the first box's image is built
# from Debian packages (busybox-static + python3), not pulled from a container registry.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive
echo "==> system packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    busybox-static e2fsprogs erofs-utils qemu-system-x86 qemu-utils cpio \
    uidmap passt ca-certificates >/dev/null

echo "==> python package"
$PY -m pip install -q --disable-pip-version-check -e ".[cli,server]"

echo "==> first box (default image built from Debian packages; takes ~20 s the first time)"
$PY - <<'PYEOF'
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
