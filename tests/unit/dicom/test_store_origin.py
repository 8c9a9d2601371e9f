"""The listener tells a retrieval we asked for from a routed instance by the Move Originator of the request.

A pynetdicom SCU sends to a running ``StoreSCP`` on 127.0.0.1: with Move Originator Application Entity
Title set to the agent's own AE title (what a PACS does for the C-STORE sub-operations of our C-MOVE) the
instance is indexed as ``retrieved`` and its new study is ``prior``; with another originator, or none, it is
routed. The mark survives in the file meta, so the start-up reconciliation re-indexes it the same way.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select
from support.dicomgen import Study as GenStudy
from support.dicomgen import _ct, save, uid

from agent.config import DicomSettings
from agent.db import Instance, Series, Study, make_engine, session_factory, upgrade
from agent.dicom.reconcile import reconcile
from agent.dicom.scp import SPILL_BYTES, StoreSCP
from agent.dicom.spool import Spool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StoreSCP]:
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    server = StoreSCP(DicomSettings(host="127.0.0.1", port=_free_port()), spool, session_factory(engine))
    server.start()
    try:
        yield server
    finally:
        server.stop(2)
        server.index.close()
        engine.dispose()


def ct_file(tmp_path: Path, key: str, size: int = 16) -> Path:
    study = GenStudy(uid(key, "study"), "Testpatient^Alice", "PID000001", "19610214")
    ds = _ct(study, uid(key, "series"), 0, 1, size)
    return save(ds, tmp_path / f"{key}.dcm")


def send(scp: StoreSCP, path: Path, originator: str | None) -> int:
    host, port = scp.address
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(host, port, ae_title=scp.settings.ae_title)
    assert assoc.is_established
    try:
        kwargs = {"originator_aet": originator, "originator_id": 7} if originator else {}
        rsp = assoc.send_c_store(pydicom.dcmread(path), **kwargs)
        return int(rsp.Status)
    finally:
        assoc.release()


def rows(scp: StoreSCP) -> dict[str, tuple[str, str]]:
    """Study UID -> (study state, instance origin)."""
    with scp.sessions() as s:
        found = s.execute(
            select(Study.study_uid, Study.state, Instance.origin)
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
        ).all()
    return {study: (state, origin) for study, state, origin in found}


@pytest.mark.parametrize("size", [16, 800], ids=["buffered", "spilled"])
def test_move_originator_our_ae_title_indexes_a_retrieved_prior(scp: StoreSCP, tmp_path: Path, size) -> None:
    retrieved = ct_file(tmp_path, "retrieved", size)
    if size == 800:
        assert retrieved.stat().st_size > SPILL_BYTES  # streamed through .incoming/
    routed = ct_file(tmp_path, "routed")
    other = ct_file(tmp_path, "other-move")
    assert send(scp, retrieved, scp.settings.ae_title) == 0
    assert send(scp, routed, None) == 0
    assert send(scp, other, "SOMEONEELSE") == 0  # a C-MOVE another AE asked for: new data for us
    assert rows(scp) == {
        uid("retrieved", "study"): ("prior", "retrieved"),
        uid("routed", "study"): ("receiving", "routed"),
        uid("other-move", "study"): ("receiving", "routed"),
    }
    # The file keeps the dataset as sent, and its meta says it answered our retrieval.
    meta = pydicom.dcmread(
        next(scp.spool.root.glob(f"{uid('retrieved', 'study')}/*/*.dcm")), stop_before_pixels=True
    ).file_meta
    assert meta.PrivateInformation == b"retrieved\0"

    # Lost commits after a power loss: the reconciliation re-indexes each file with its origin.
    with scp.sessions.begin() as s:
        s.execute(Instance.__table__.delete())
        s.execute(Study.__table__.update().values(state="done"))
    assert reconcile(scp.spool, scp.sessions.kw["bind"]).indexed == 3
    assert rows(scp) == {
        uid("retrieved", "study"): ("done", "retrieved"),
        uid("routed", "study"): ("receiving", "routed"),
        uid("other-move", "study"): ("receiving", "routed"),
    }


def test_a_failed_fsync_takes_back_the_row_committed_meanwhile(
    scp: StoreSCP, tmp_path: Path, monkeypatch
) -> None:
    """The index commit overlaps the fsync; when the fsync fails the row goes and 0xA700 is answered."""
    import agent.dicom.spool as spool_module

    path = ct_file(tmp_path, "eio")
    real_fsync = spool_module.os.fsync

    def failing_fsync(fd: int) -> None:
        if spool_module.os.fstat(fd).st_size > 1000:  # the instance file, not a directory
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", failing_fsync)
    assert send(scp, path, None) == 0xA700
    monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
    assert rows(scp) == {}
    assert not list(scp.spool.root.glob("*/*/*.dcm"))
    assert send(scp, path, None) == 0  # the sender's retry
    assert rows(scp) == {uid("eio", "study"): ("receiving", "routed")}
