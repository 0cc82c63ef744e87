"""The SkillBox image: Debian's Node.js, git, bash, python3, Claude Code from npm and the desktop.

BoxLite's SkillBox image comes from a container registry and installs Claude Code with
``curl https://claude.ai/install.sh | bash`` on first use; this one is built from Debian packages
plus one pinned npm package (installed by the host's ``npm`` with ``--ignore-scripts``, so no
package code runs on the host), so a SkillBox works with no registry and no network in the box.
It carries the ComputerBox desktop (``desktop.PACKAGES``, its exclusions and session script) so a
person can watch Claude Code through noVNC, as in BoxLite: one image rather than a second "skill
without desktop" one, since the desktop adds ~150 MB of shared libraries and starts in ~1 s on the
namespace engine (the session runs beside Claude Code; nothing waits for it unless asked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import ImageError
from ..debian import ensure_keyed_rootfs
from ..locks import file_lock
from . import desktop

PACKAGES = (
    "busybox-static",
    "bash",
    "ca-certificates",
    "git",
    "python3-minimal",
    "libpython3-stdlib",
)
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_CODE_VERSION = "2.1.100"
"""Pinned: the newest release that is still a Node script (``cli.js``) running on Debian 12's
Node 18; later releases ship a native binary or need Node 22."""
RECIPE_VERSION = f"skill-2:{CLAUDE_CODE_PACKAGE}@{CLAUDE_CODE_VERSION}"
"""Part of the image key: changes whenever :func:`finish` or the pinned version changes."""

NODE_PACKAGE = "nodejs"
"""Fetched apart from :data:`PACKAGES` with the host's dpkg status hidden: a Node.js the host got
elsewhere (e.g. NodeSource's) must not become the candidate, since no mirror serves it."""
_NO_STATUS = ["-o", "Dir::State::status=/dev/null"]

INSTALL_DIR = "opt/claude-code"
CLAUDE = "/usr/local/bin/claude"
NPM_TIMEOUT = 600.0

_WRAPPER = f"""#!/bin/sh
exec /usr/bin/node /{INSTALL_DIR}/node_modules/{CLAUDE_CODE_PACKAGE}/cli.js "$@"
"""


def npm_package(cache_dir: Path, version: str = CLAUDE_CODE_VERSION) -> Path:
    """``node_modules`` holding Claude Code ``version``, fetched once by the host's npm.

    ``--ignore-scripts``: no install script of the package runs (on the host or later);
    ``--omit=optional``: the optional native image libraries (sharp) are left out.
    """
    dest = Path(cache_dir) / "npm" / version
    done = dest / "node_modules" / CLAUDE_CODE_PACKAGE / "package.json"
    if done.is_file():
        return dest / "node_modules"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f"{version}.lock"):
        if done.is_file():
            return dest / "node_modules"
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{version}-"))
        cmd = [
            "npm", "install", "--prefix", str(work), "--ignore-scripts", "--omit=optional", "--no-audit",
            "--no-fund", "--no-package-lock", "--no-save", "--no-update-notifier",
            f"{CLAUDE_CODE_PACKAGE}@{version}",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=NPM_TIMEOUT, cwd=work)
            meta = json.loads((work / "node_modules" / CLAUDE_CODE_PACKAGE / "package.json").read_text())
            if meta.get("version") != version:
                raise ImageError(f"npm installed {CLAUDE_CODE_PACKAGE} {meta.get('version')}, not {version}")
            os.rename(work, dest)
        except FileNotFoundError as e:
            shutil.rmtree(work, ignore_errors=True)
            raise ImageError("npm is not installed (needed to build the SkillBox image)") from e
        except subprocess.TimeoutExpired as e:
            shutil.rmtree(work, ignore_errors=True)
            raise ImageError(f"npm install {CLAUDE_CODE_PACKAGE}@{version} took over {NPM_TIMEOUT:g} s") from e
        except subprocess.CalledProcessError as e:
            shutil.rmtree(work, ignore_errors=True)
            raise ImageError(f"npm install {CLAUDE_CODE_PACKAGE}@{version} failed: {e.stderr.strip()[-500:]}") from e
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return dest / "node_modules"


def _apt(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=NPM_TIMEOUT, cwd=cwd)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        raise ImageError(f"{' '.join(cmd[:2])} {NODE_PACKAGE} failed: {str(detail).strip()[-500:]}") from e
    return r.stdout


def node_deb(cache_dir: Path) -> tuple[Path, list[str]]:
    """Debian's ``nodejs`` .deb (downloaded once) and the names of the packages it depends on."""
    deps_out = _apt(["apt-cache", *_NO_STATUS, "depends", "--no-recommends", "--no-suggests", NODE_PACKAGE])
    deps = sorted(
        {line.split(":", 1)[1].strip() for line in deps_out.splitlines() if line.strip().startswith("Depends:")}
    )
    deps = [d for d in deps if not d.startswith("<")]
    out = Path(cache_dir) / "node-deb"
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / "download.lock"):
        debs = sorted(out.glob(f"{NODE_PACKAGE}_*.deb"))
        if not debs:
            _apt(["apt-get", *_NO_STATUS, "download", "-q", NODE_PACKAGE], cwd=out)
            debs = sorted(out.glob(f"{NODE_PACKAGE}_*.deb"))
    if not debs:
        raise ImageError(f"apt-get download produced no .deb for {NODE_PACKAGE}")
    return debs[-1], deps


def _finish(tree: Path, node_modules: Path, node: Path) -> None:
    """What maintainer scripts would have done, plus Node, Claude Code and its ``claude`` command."""
    _apt(["dpkg-deb", "-x", str(node), str(tree)])
    if not (tree / "usr/bin/node").exists():
        raise ImageError("the nodejs package did not provide /usr/bin/node")
    # update-ca-certificates: one bundle of Mozilla's roots (git and Node's https use it).
    roots = sorted((tree / "usr/share/ca-certificates").rglob("*.crt"))
    certs = tree / "etc/ssl/certs"
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "ca-certificates.crt").write_bytes(b"".join(p.read_bytes() for p in roots))
    try:
        subprocess.run(["ldconfig", "-r", str(tree)], capture_output=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageError(f"ldconfig -r on the skill image failed: {e}") from e
    shutil.copytree(node_modules, tree / INSTALL_DIR / "node_modules", symlinks=True)
    wrapper = tree / CLAUDE.lstrip("/")
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(_WRAPPER)
    os.chmod(wrapper, 0o755)
    # Claude Code's per-user state (~/.claude, ~/.claude.json) lives in the box user's home.
    (tree / "root").mkdir(exist_ok=True)
    os.chmod(tree / "root", 0o700)
    desktop.finish_desktop(tree)


def ensure(cache_dir: Path) -> Path:
    """Build (once per set of .deb files and Claude Code version, under a lock) and return the rootfs."""
    cache_dir = Path(cache_dir)
    node_modules = npm_package(cache_dir)
    node, node_deps = node_deb(cache_dir)
    packages = sorted({*PACKAGES, *desktop.PACKAGES, *node_deps})
    # The desktop leaves Node's runtime out (noVNC's optional tooling); here Node stays.
    exclude = frozenset(p for p in desktop.DESKTOP_EXCLUDE if not p.startswith(("libnode", "node-")))
    salt = f"{RECIPE_VERSION}:{node.name}:desktop-{desktop.recipe_key()}"
    return ensure_keyed_rootfs(
        cache_dir, packages, finish=lambda tree: _finish(tree, node_modules, node), salt=salt, exclude=exclude
    )
