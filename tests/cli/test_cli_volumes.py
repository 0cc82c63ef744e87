"""``boxlite volume create|ls|inspect|rm``: Docker's verbs and flags (-q, --format json, -f)."""

from __future__ import annotations

from support.cli import Cli, assert_one_line_error


def test_volume_verbs(cli: Cli) -> None:
    vid = cli.ok("volume", "create").strip()
    assert vid.startswith("vol-") and cli.ok("volume", "ls", "-q").split() == [vid]
    assert [v["id"] for v in cli.json("volume", "ls", "--format", "json")] == [vid]  # type: ignore[index, union-attr]
    assert "VOLUME ID" in cli.ok("volume", "list")
    inspected = cli.json("volume", "inspect", vid)
    assert isinstance(inspected, list) and inspected[0]["id"] == vid and "created_at" in inspected[0]
    # a box naming it (created, never started: no boot) keeps it
    box = cli.ok("create", "--rootfs", str(cli.rootfs), "-v", f"{vid}:/data").strip()
    assert_one_line_error(cli("volume", "rm", vid), 125, box)
    cli.ok("rm", box)
    assert cli.ok("volume", "rm", vid).split() == [vid]
    assert_one_line_error(cli("volume", "inspect", "../etc"), 125, "invalid volume id")
    assert_one_line_error(cli("volume", "rm", vid), 125, "no volume")
    cli.ok("volume", "rm", "-f", vid)
