"""The spool: only valid DICOM UIDs become path parts; writes are atomic and replace earlier copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dicom.spool import Spool, is_valid_uid


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.5.1.4.1.1.2", "0", "1.0.3", "2.25." + "9" * 39, "1." + "2" * 62],
)
def test_valid_uids_are_accepted(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "1.2.03",  # leading zero in a component
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.3a",
        "../../etc/passwd",
        "1.2/../../x",
        "1.2.3\x00",
        " 1.2.3",
        "1." + "2" * 63,  # 65 characters
        "１.２",  # non-ASCII digits
    ],
)
def test_invalid_or_path_like_uids_are_refused(uid: str) -> None:
    assert not is_valid_uid(uid)


def test_non_strings_are_not_uids() -> None:
    assert not is_valid_uid(None)
    assert not is_valid_uid(12)


def test_relative_path_refuses_path_like_uid(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(ValueError):
        spool.relative_path("1.2.3", "../..", "1.2.5")
    assert spool.relative_path("1.2.3", "1.2.4", "1.2.5") == Path("1.2.3/1.2.4/1.2.5.dcm")


def test_write_is_atomic_and_replaces_an_earlier_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    rel = spool.relative_path("1.2.3", "1.2.4", "1.2.5")
    assert spool.write(rel, [b"first", b"-copy"]) == 10
    assert spool.write(rel, [b"second"]) == 6
    target = tmp_path / "spool" / rel
    assert target.read_bytes() == b"second"
    # No temporary file is left beside it.
    assert [p.name for p in target.parent.iterdir()] == ["1.2.5.dcm"]


def test_free_space_floor(tmp_path: Path) -> None:
    assert Spool(tmp_path, min_free_mb=0).has_room(1024)
    huge = Spool(tmp_path, min_free_mb=1 << 40)  # a floor no disk reaches
    assert not huge.has_room(0)
