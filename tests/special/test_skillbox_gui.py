"""SkillBox's desktop options (issue 13). The desktop itself (noVNC over HTTP and HTTPS, the VNC
password, a program drawing on the display) is checked on the one SkillBox of each engine that
tests/special/test_skillbox.py starts (``test_skillbox_desktop_novnc_http_https_and_vnc_password``):
under TCG another box start and Claude Code start would cost minutes of CI."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.computerbox import DesktopError
from boxlite.errors import ConfigError
from boxlite.skillbox import SkillBox


def test_skillbox_gui_options_are_checked() -> None:
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_http_port=7000, gui_https_port=7000)
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_http_port=70_000)
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_https_port=True)  # type: ignore[arg-type]
    box = SkillBox(api_key="k", gui_http_port=7001)
    assert (box.gui_http_port, box.gui_https_port) == (7001, None)  # None: a free one, chosen at start
    with pytest.raises(boxlite.errors.BoxliteError, match="not published"):
        box.novnc_url()


@pytest.mark.namespace_only  # one more box start; the behaviour is engine-independent host code
async def test_skillbox_image_without_a_desktop_still_starts(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """``image=`` of one's own without boxlite-desktop: the box starts; the desktop says why it is absent."""
    async with SkillBox(rootfs_path=str(busybox_rootfs), runtime=runtime, api_key="k", name=None) as box:
        assert (await box.exec("echo", "up")).stdout.strip() == "up"
        with pytest.raises(DesktopError, match="no desktop"):
            box.novnc_url()
