"""STOW-RS into a real ``liver-agent serve``, posted with ``dicomweb-client`` (and raw HTTP for bad bodies).

A study (uncompressed CT, RLE CT, SR) arrives byte-identical (the dataset part of each spooled file equals
the dataset part of the file posted, as for C-STORE), is indexed once even when posted twice, and turns
stable with one job; a CT and a measurement SR are processed into a result. A bad token gets 401, a token
without the ``store`` scope 403; in a request with a malformed part only that part fails, with its
FailureReason; another media type gets 415, a body over ``web.stow_max_request_mb`` 413. A 120 MB instance
streams through with the agent's anonymous memory growing by a few MB; one agent delivers to another with
its STOW-RS client and a bearer token.
"""

from __future__ import annotations

import hashlib
import io
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from support.agentproc import free_port, wait_until
from support.dicomgen import dataset_bytes, make_study

from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

pytestmark = pytest.mark.integration

STORE_TOKEN = "stow-token-0123456789abcdef0123456789"
READ_TOKEN = "read-token-0123456789abcdef0123456789"
BOUNDARY = "liver-agent-test-boundary"


def _hash(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def start(make_agent: Any, **extra: str) -> tuple[Any, str]:
    web_port = free_port()
    tokens = (
        f'[{{"name": "router", "hash": "{_hash(STORE_TOKEN)}", "scopes": ["store"]}},'
        f' {{"name": "reader", "hash": "{_hash(READ_TOKEN)}", "scopes": ["read"]}}]'
    )
    agent = make_agent(
        LIVER_AGENT_WEB__ENABLED="true",
        LIVER_AGENT_WEB__PORT=str(web_port),
        LIVER_AGENT_WEB__TOKENS=tokens,
        **extra,
    ).start()
    return agent, f"http://127.0.0.1:{web_port}/dicomweb"


def client(url: str, token: str = STORE_TOKEN) -> DICOMwebClient:
    c = DICOMwebClient(url, headers={"Authorization": f"Bearer {token}"})
    c.set_http_retry_params(retry=False)
    return c


def spooled(agent: Any, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return agent.spool / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def posted_bytes(path: Path) -> bytes:
    """The dataset bytes dicomweb-client sends for a file (it re-encodes the dataset it is given)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, pydicom.dcmread(path))
    return dataset_bytes_of(buf.getvalue())


def dataset_bytes_of(data: bytes) -> bytes:
    from agent.dicom.header import read_file_meta

    return data[read_file_meta(data).dataset_offset :]


def multipart(parts: list[bytes], content_type: str = "application/dicom") -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    body += f"--{BOUNDARY}--\r\n".encode()
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Authorization": f"Bearer {STORE_TOKEN}",
    }
    return body, headers


def test_a_study_posted_twice_is_stored_byte_identical_and_indexed_once(make_agent, tmp_path: Path) -> None:
    agent, url = start(make_agent)
    study = make_study(tmp_path / "study", key="stow")
    datasets = [pydicom.dcmread(p) for p in study.files]
    answer = client(url).store_instances(datasets)
    stored = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert stored == {str(ds.SOPInstanceUID) for ds in datasets}
    assert "FailedSOPSequence" not in answer
    for path in study.files:
        target = spooled(agent, path)
        assert target.exists(), path.name
        assert dataset_bytes(target) == posted_bytes(path) == dataset_bytes(path), path.name
        meta = pydicom.dcmread(target, stop_before_pixels=True).file_meta
        assert (
            meta.TransferSyntaxUID
            == pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        )
    # Posted again: each copy replaces the earlier one, nothing is indexed twice.
    client(url).store_instances(datasets)
    n = len(study.files)
    assert agent.scalar("SELECT count(*) FROM instances") == n
    assert agent.scalar("SELECT count(DISTINCT sop_uid) FROM instances") == n
    assert agent.query("SELECT DISTINCT origin, calling_aet FROM instances") == [("routed", "router")]
    assert sorted(p.suffix for p in agent.spool.rglob("*") if p.is_file()) == [".dcm"] * n
    assert len(agent.events("scp.stored")) == 2 * n
    assert agent.wait_state(study.study_uid, "stable"), agent.all_logs()[-3000:]
    jobs = agent.query(
        "SELECT j.kind, j.state FROM jobs j JOIN studies s ON s.id = j.study_pk WHERE s.study_uid = :u",
        u=study.study_uid,
    )
    assert jobs == [("process_study", "pending")]
    assert agent.stop() == 0


def test_a_measurement_sr_posted_is_processed(make_agent, tmp_path: Path) -> None:
    agent, url = start(
        make_agent,
        LIVER_AGENT_PIPELINE__ENABLED="true",
        LIVER_AGENT_PIPELINE__POLL_INTERVAL_S="0.2",
        LIVER_AGENT_STABILITY__STABLE_AFTER_S="0.6",
        LIVER_AGENT_STABILITY__CHECK_INTERVAL_S="0.2",
        LIVER_AGENT_PIPELINE__RESULTS_DIR=str(tmp_path / "results"),
    )
    day = date(2024, 4, 2)
    ct = ct_image("STOWSR", "stow-sr", day)
    ct.StudyDescription = "CT ABDOMEN LIVER FOLLOW-UP"
    ct.BodyPartExamined = "ABDOMEN"
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    sr_path, _ = write_study_sr(
        tmp_path,
        "stow-sr",
        patient_id="STOWSR",
        study="stow-sr",
        study_date=day,
        lesions=[LesionSpec("liver seg 7", uid("S1"), long_mm=31.0)],
    )
    client(url).store_instances([pydicom.dcmread(ct_path), pydicom.dcmread(sr_path)])
    study_uid = uid("stow-sr")
    assert agent.wait_state(study_uid, "done", 30), agent.all_logs()[-3000:]
    assert agent.scalar("SELECT count(*) FROM output_versions WHERE current = 1") == 1
    assert agent.scalar("SELECT count(*) FROM instances") == 2
    agent.stop()


def test_refusals_bad_token_malformed_part_media_type_and_size(make_agent, tmp_path: Path) -> None:
    agent, url = start(make_agent, LIVER_AGENT_WEB__STOW_MAX_REQUEST_MB="1")
    study = make_study(tmp_path / "study", key="stow-refusals")
    good = study.files[0]
    with pytest.raises(requests.HTTPError) as info:
        client(url, "not-a-token").store_instances([pydicom.dcmread(good)])
    assert info.value.response.status_code == 401
    with pytest.raises(requests.HTTPError) as info:
        client(url, READ_TOKEN).store_instances([pydicom.dcmread(good)])
    assert info.value.response.status_code == 403
    assert agent.scalar("SELECT count(*) FROM instances") == 0

    raw = good.read_bytes()
    truncated = study.files[1].read_bytes()[:-100]
    body, headers = multipart([raw, b"this is not DICOM at all", truncated])
    rsp = requests.post(f"{url}/studies", data=body, headers=headers, timeout=30)
    assert rsp.status_code == 202, rsp.text
    assert rsp.headers["Content-Type"].startswith("application/dicom+json")
    answer = pydicom.Dataset.from_json(rsp.json())
    good_uid = str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
    truncated_uid = str(pydicom.dcmread(study.files[1], stop_before_pixels=True).SOPInstanceUID)
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [good_uid]
    failures = [
        (str(i.get("ReferencedSOPInstanceUID", "")), int(i.FailureReason)) for i in answer.FailedSOPSequence
    ]
    assert failures == [("", 0xC000), (truncated_uid, 0xC000)]
    assert agent.query("SELECT sop_uid FROM instances") == [(good_uid,)]
    refused = agent.events("scp.store.refused")
    assert [e["status"] for e in refused] == ["0xC000", "0xC000"]

    # Every part refused: 409.
    body, headers = multipart([b"garbage"])
    rsp = requests.post(f"{url}/studies", data=body, headers=headers, timeout=30)
    assert rsp.status_code == 409
    # Not multipart/related application/dicom: 415. Over web.stow_max_request_mb: 413.
    rsp = requests.post(
        f"{url}/studies",
        data=raw,
        headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {STORE_TOKEN}"},
        timeout=30,
    )
    assert rsp.status_code == 415
    body, headers = multipart([b"\0" * (2 * 1024 * 1024)])
    rsp = requests.post(f"{url}/studies", data=body, headers=headers, timeout=30)
    assert rsp.status_code == 413
    assert wait_until(lambda: not list((agent.spool / ".incoming").iterdir()), 5)
    assert agent.scalar("SELECT count(*) FROM instances") == 1
    assert agent.stop() == 0


def test_one_agent_delivers_to_another_over_stow_rs_with_a_bearer_token(
    make_agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our DICOMweb peer (the outbox's STOW-RS client) against our STOW-RS origin server: bearer auth."""
    from agent.config import DicomwebPeerSettings
    from agent.peers import Outcome, StoreItem, build_peer

    agent, url = start(make_agent)
    ct = ct_image("AGENT2AGENT", "a2a", date(2024, 5, 1))
    path = tmp_path / "ct.dcm"
    ct.save_as(path, enforce_file_format=True)
    item = StoreItem(path, str(ct.SOPClassUID), str(ct.SOPInstanceUID))
    monkeypatch.setenv("DOWNSTREAM_TOKEN", STORE_TOKEN)

    def peer(**auth: str) -> Any:
        settings = DicomwebPeerSettings(type="dicomweb", stow_url=url, query_retrieve=False, **auth)
        return build_peer("downstream", settings, "LIVERAGENT")

    (result,) = peer(auth="bearer", token_env="DOWNSTREAM_TOKEN").store([item])
    assert (result.outcome, result.status) == (Outcome.OK, 0)
    assert agent.query("SELECT sop_uid, calling_aet FROM instances") == [(item.sop_uid, "router")]
    (refused,) = peer(auth="bearer", token="wrong").store([item])
    assert (refused.outcome, refused.status) == (Outcome.PERMANENT, 401)
    (reader,) = peer(auth="bearer", token=READ_TOKEN).store([item])
    assert (reader.outcome, reader.status) == (Outcome.PERMANENT, 403)
    assert agent.stop() == 0


def test_a_large_instance_streams_through_bounded_memory(make_agent, tmp_path: Path) -> None:
    """A 120 MB CT posted in chunks: the agent's anonymous memory stays far below the instance size, and the
    instance is stored byte-identical."""
    import threading
    import time

    import numpy as np

    agent, url = start(make_agent)
    ct = ct_image("STOWBIG", "stow-big", date(2024, 6, 1))
    ct.Rows, ct.Columns = 6000, 10000
    ct.PixelData = np.full((6000, 10000), 7, dtype=np.uint16).tobytes()
    path = tmp_path / "big.dcm"
    ct.save_as(path, enforce_file_format=True)
    del ct
    size = path.stat().st_size
    assert size > 120_000_000

    def rss_anon() -> int:
        status = Path(f"/proc/{agent.proc.pid}/status").read_text()
        return (
            int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:"))) * 1024
        )

    baseline = rss_anon()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.01)

    def body():
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _, headers = multipart([])
        rsp = requests.post(f"{url}/studies", data=body(), headers=headers, timeout=120)
    finally:
        done.set()
        sampler.join()
    assert rsp.status_code == 200, rsp.text
    assert dataset_bytes(spooled(agent, path)) == dataset_bytes(path)
    growth = peak[0] - baseline
    assert growth < 48 * 1024 * 1024, (
        f"anonymous memory grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB post"
    )
    print(f"\n[memory] STOW-RS of {size / 1e6:.0f} MB: agent anonymous memory +{growth / 1e6:.1f} MB")
    assert agent.stop() == 0
