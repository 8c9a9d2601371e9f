"""Start-up reconciliation: the spool is the durable record, the index is rebuilt from it after a crash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.dicomgen import make_study

from agent.db import Instance, make_engine, upgrade
from agent.dicom.reconcile import reconcile
from agent.dicom.spool import Spool


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def spool_study(spool: Spool, tmp_path: Path, key: str) -> list[Path]:
    """Generate a study and file it in the spool as the listener would; returns the relative paths."""
    import pydicom

    study = make_study(tmp_path / key, key=key, ct_instances=2)
    out = []
    for path in study.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        relative = spool.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        (spool.root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spool.root / relative)
        out.append(relative)
    return out


def indexed(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Instance.sop_uid, Instance.path)).all())


def test_lost_commits_are_indexed_again_exactly_once(engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.prepare() is True  # a new spool
    files = spool_study(spool, tmp_path, "lost")
    first = reconcile(spool, engine)
    assert (first.indexed, first.removed) == (len(files), 0)
    rows = indexed(engine)
    assert sorted(rows.values()) == sorted(p.as_posix() for p in files)
    # Roll back two commits (what a power loss may do to synchronous=NORMAL), then reconcile twice.
    with engine.begin() as conn:
        conn.execute(
            Instance.__table__.delete().where(Instance.path.in_([files[0].as_posix(), files[3].as_posix()]))
        )
    assert reconcile(spool, engine).indexed == 2
    assert reconcile(spool, engine).indexed == 0
    assert indexed(engine) == rows
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Instance)).scalar_one() == len(files)


def test_a_file_cut_short_is_removed_and_never_indexed(engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    files = spool_study(spool, tmp_path, "cut")
    victim = spool.root / files[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 500])
    (victim.parent / f".{victim.name}.123.tmp").write_bytes(data)  # a replacement that never finished
    result = reconcile(spool, engine)
    assert (result.indexed, result.removed) == (len(files) - 1, 1)
    assert not victim.exists()
    assert [p.name for p in victim.parent.iterdir() if p.name.startswith(".")] == []
    assert files[1].as_posix() not in indexed(engine).values()


def test_of_two_copies_of_an_instance_the_newer_one_wins(engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    files = spool_study(spool, tmp_path, "moved")
    reconcile(spool, engine)
    # The same SOP Instance filed again under another series directory (its study was corrected), and the
    # commit that pointed the row at the new file was lost.
    old = files[0]
    new = Path(old.parts[0], "1.2.999", old.name)
    (spool.root / new).parent.mkdir(parents=True)
    import pydicom

    ds = pydicom.dcmread(spool.root / old)
    ds.SeriesInstanceUID = "1.2.999"
    ds.save_as(spool.root / new)
    t = (spool.root / old).stat().st_mtime_ns
    os.utime(spool.root / new, ns=(t + 10**9, t + 10**9))
    result = reconcile(spool, engine)
    assert (result.indexed, result.removed) == (1, 1)
    assert indexed(engine)[old.stem] == new.as_posix()
    assert not (spool.root / old).exists()
    assert reconcile(spool, engine).indexed == 0


def test_the_clean_marker_tells_a_clean_stop_from_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.prepare() is True
    assert spool.prepare() is False  # started again without a clean stop in between
    spool.mark_clean()
    assert spool.prepare() is True
    assert spool.prepare() is False


def _study_count(engine) -> int:
    from agent.db import Study

    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Study)).scalar_one()


def test_rows_committed_before_their_file_reached_the_disk_are_dropped(engine, tmp_path: Path) -> None:
    """The listener commits the row while the file's fsync runs; a power loss may keep only the row."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    files = spool_study(spool, tmp_path, "unsynced")
    lone = spool_study(spool, tmp_path, "lone")  # a second study whose only files never reached the disk
    reconcile(spool, engine)
    assert _study_count(engine) == 2
    # Power loss: one file of the first study is gone, another lost its tail; the second study lost all.
    (spool.root / files[0]).unlink()
    cut = spool.root / files[2]
    cut.write_bytes(cut.read_bytes()[:-300])
    for f in lone:
        (spool.root / f).unlink()
    result = reconcile(spool, engine)
    assert (result.dropped, result.indexed, result.removed) == (2 + len(lone), 0, 1)
    assert not cut.exists()
    assert sorted(indexed(engine).values()) == sorted(p.as_posix() for p in files[1:] if p != files[2])
    assert _study_count(engine) == 1  # the study left without any instance (nor job) is gone
    assert reconcile(spool, engine) == type(result)(files=len(files) - 2)


def test_a_replacement_filed_elsewhere_whose_file_was_lost_falls_back_to_the_earlier_copy(
    engine, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    files = spool_study(spool, tmp_path, "fallback")
    reconcile(spool, engine)
    old = files[0]
    with engine.begin() as conn:  # the row was pointed at the new copy, whose rename never reached the disk
        conn.execute(
            Instance.__table__.update()
            .where(Instance.sop_uid == old.stem)
            .values(path=Path(old.parts[0], "1.2.999", old.name).as_posix())
        )
    result = reconcile(spool, engine)
    assert (result.dropped, result.indexed) == (1, 1)
    assert indexed(engine)[old.stem] == old.as_posix()
