"""The directory fsync rule: skipped only where the filesystem is verified to make it unnecessary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.dicom.spool import Spool, entry_durability


def fake_system(
    root: Path, fstype: str, device: str = "254:0", name: str = "vda", journal: bool = False
) -> Path:
    """A mountinfo naming ``root``'s filesystem, and the /sys and /proc entries of its device."""
    mountinfo = root / "mountinfo"
    mountinfo.write_text(
        f"22 1 {device} / / rw,relatime shared:1 - {fstype} /dev/{name} rw\n"
        f"30 22 0:5 / /proc rw - proc proc rw\n"
    )
    block = root / "sys/dev/block"
    block.mkdir(parents=True)
    (root / "devices" / name).mkdir(parents=True)
    os.symlink(root / "devices" / name, block / device)
    jbd2 = root / "proc/fs/jbd2"
    jbd2.mkdir(parents=True)
    if journal:
        (jbd2 / f"{name}-8").mkdir()
    return mountinfo


@pytest.mark.parametrize(
    ("fstype", "journal", "durable"),
    [
        ("ext4", False, False),  # no journal: the directory needs its own fsync
        ("ext4", True, True),
        ("xfs", False, True),
        ("btrfs", False, True),
        ("tmpfs", False, False),
        ("overlay", False, False),
        ("nfs4", False, False),
    ],
)
def test_directory_fsync_is_skipped_only_on_a_verified_filesystem(
    tmp_path: Path, fstype: str, journal: bool, durable: bool
) -> None:
    mountinfo = fake_system(tmp_path, fstype, journal=journal)
    verdict, reason = entry_durability(tmp_path / "spool", mountinfo, tmp_path)
    assert verdict is durable
    assert reason


def test_an_unreadable_mount_table_means_fsync(tmp_path: Path) -> None:
    assert entry_durability(tmp_path, tmp_path / "missing", tmp_path) == (
        False,
        "unknown filesystem: not known to commit a new entry with the file",
    )


def test_the_spool_decides_at_start_from_its_own_filesystem(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    assert spool.sync_new_entries is not entry_durability(spool.root)[0]
    assert spool.durability == entry_durability(spool.root)[1]
