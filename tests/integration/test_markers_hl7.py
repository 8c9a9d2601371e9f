"""Tumour marker results into a real ``liver-agent serve``: HL7 v2 ORU^R01 over MLLP sent with the ``hl7``
library's MLLP client (as a laboratory system would), and ``liver-agent markers import`` for a CSV batch.

ACK AA only once the row is in the database (checked right after the ACK); AR/AE with the reason for what
cannot be used; a hostile peer (oversized frame, a frame never finished) costs bounded time and is answered.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from support.agentproc import REPO, free_port

LAB = "LABSYS"


def oru(
    control: str,
    obx: list[str],
    *,
    app: str = LAB,
    kind: str = "ORU^R01^ORU_R01",
    patient: str = "MK-1^^^HOSP^MR",
) -> str:
    segments = [
        f"MSH|^~\\&|{app}|CITYLAB|LIVERAGENT|RAD|20240301120000||{kind}|{control}|P|2.5",
        f"PID|1||{patient}||Doe^Jane",
        "OBR|1||F1|2039-6^CEA^LN|||20240301",
        *obx,
    ]
    return "\r".join(segments) + "\r"


def cea_obx(
    n: int, value: str, day: str, status: str = "F", unit: str = "ng/mL", code: str = "2039-6^CEA^LN"
) -> str:
    return f"OBX|{n}|NM|{code}||{value}|{unit}|0-5|H|||{status}|||{day}0830"


def ack(answer: bytes) -> tuple[str, str, str]:
    message = hl7.parse(answer.decode("utf-8").strip("\x0b\x1c\r"))
    msa = message.segment("MSA")
    return str(msa[1]), str(msa[2]), message.unescape(str(msa[3])) if len(msa) > 3 else ""


@pytest.fixture
def agent(make_agent):
    port = free_port()
    a = make_agent(
        LIVER_AGENT_MARKERS__HL7__ENABLED="true",
        LIVER_AGENT_MARKERS__HL7__PORT=str(port),
        LIVER_AGENT_MARKERS__HL7__ALLOWED_APPLICATIONS=f'["{LAB}"]',
        LIVER_AGENT_MARKERS__HL7__LOCAL_CODES='{"XCA199": "CA 19-9"}',
        LIVER_AGENT_MARKERS__HL7__MAX_MESSAGE_BYTES="4096",
        LIVER_AGENT_MARKERS__HL7__READ_TIMEOUT_S="2",
        LIVER_AGENT_MARKERS__HL7__IDLE_TIMEOUT_S="3",
        LIVER_AGENT_MARKERS__HL7__MAX_CONNECTIONS="2",
    )
    a.hl7_port = port
    a.start()
    yield a
    a.stop()


def rows(agent) -> list[tuple]:
    return agent.query(
        "SELECT patient_id, issuer, marker, sample_date, value, unit, upper_limit FROM markers"
    )


def test_oru_is_acknowledged_after_it_is_stored(agent) -> None:
    with MLLPClient("127.0.0.1", agent.hl7_port) as client:
        answer = client.send_message(
            oru("C1", [cea_obx(1, "40.5", "20240110"), cea_obx(2, "3.1", "20240110", code="GLU^Glucose^L")])
        )
        code, control, _ = ack(answer)
        assert (code, control) == ("AA", "C1")
        assert rows(agent) == [("MK-1", "HOSP", "CEA", "2024-01-10", "40.5", "ng/mL", "5")]
        # a corrected result of the same day replaces it; a local code maps to its marker
        answer = client.send_message(
            oru(
                "C2",
                [
                    cea_obx(1, "41", "20240110", status="C"),
                    cea_obx(2, "88", "20240112", unit="U/mL", code="XCA199^CA19-9^L"),
                ],
            )
        )
        assert ack(answer)[0] == "AA"
    assert sorted(rows(agent)) == [
        ("MK-1", "HOSP", "CA 19-9", "2024-01-12", "88", "U/mL", "5"),
        ("MK-1", "HOSP", "CEA", "2024-01-10", "41", "ng/mL", "5"),
    ]
    assert "Jane" not in agent.all_logs() and "MK-1" not in agent.all_logs()
    # PID-3 with several identifiers: the medical record number (type MR) is the patient
    with MLLPClient("127.0.0.1", agent.hl7_port) as client:
        message = oru(
            "C3",
            [cea_obx(1, "9", "20240201")],
            patient="123456^^^NATION&1.2.3&ISO^NI~MK-9^^^HOSP&1.2.4&ISO^MR",
        )
        assert ack(client.send_message(message))[0] == "AA"
    assert agent.query("SELECT patient_id, issuer FROM markers WHERE sample_date = '2024-02-01'") == [
        ("MK-9", "HOSP")
    ]


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (
            oru("R1", [cea_obx(1, "5", "20240110")], app="OTHERLAB"),
            "AR",
            "sending application OTHERLAB is not allowed",
        ),
        (oru("R2", [cea_obx(1, "5", "20240110")], kind="ADT^A01^ADT_A01"), "AR", "ADT^A01 is not accepted"),
        (oru("R3", [cea_obx(1, "3.1", "20240110", code="GLU^Glucose^L")]), "AE", "no tumour marker result"),
        (oru("R4", [cea_obx(1, "high", "20240110")]), "AE", "not a number"),
        (oru("R5", [cea_obx(1, "5", "20240110", status="P")]), "AE", "not final"),
        (oru("R6", [cea_obx(1, "5", "20240110", unit="")]), "AE", "no unit"),
        (oru("R7", [cea_obx(1, "5", "20240110")], patient=""), "AE", "no patient ID"),
    ],
)
def test_unusable_messages_are_refused_with_a_reason(agent, message: str, code: str, reason: str) -> None:
    with MLLPClient("127.0.0.1", agent.hl7_port) as client:
        got, control, text = ack(client.send_message(message))
    assert got == code and reason in text and control == message.split("|")[9]
    assert rows(agent) == []


def test_hostile_peer_costs_bounded_time(agent) -> None:
    # an oversized frame: AR, connection closed
    with socket.create_connection(("127.0.0.1", agent.hl7_port), timeout=10) as sock:
        sock.sendall(b"\x0b" + b"A" * 10_000)
        answer = sock.recv(65536)
        assert b"MSA|AR||the message exceeds 4096 bytes" in answer
        assert sock.recv(10) == b""
    # a frame never finished: AR after read_timeout_s (2 s), not later
    with socket.create_connection(("127.0.0.1", agent.hl7_port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(b"\x0bMSH|^~\\&|LABSYS")
        answer = sock.recv(65536)
        assert b"not complete within 2 s" in answer and time.monotonic() - t0 < 6
    # the listener still answers afterwards
    with MLLPClient("127.0.0.1", agent.hl7_port) as client:
        assert ack(client.send_message(oru("OK", [cea_obx(1, "7", "20240110")])))[0] == "AA"


def test_connections_beyond_the_limit_are_closed_and_idle_ones_time_out(agent) -> None:
    held = [socket.create_connection(("127.0.0.1", agent.hl7_port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.3)  # both are being served
        with socket.create_connection(("127.0.0.1", agent.hl7_port), timeout=10) as extra:
            t0 = time.monotonic()
            assert extra.recv(10) == b"" and time.monotonic() - t0 < 2  # closed at once
        # an idle connection is closed after idle_timeout_s (3 s), freeing its slot
        t0 = time.monotonic()
        assert held[0].recv(10) == b"" and time.monotonic() - t0 < 6
        assert held[1].recv(10) == b""
    finally:
        for sock in held:
            sock.close()
    with MLLPClient("127.0.0.1", agent.hl7_port) as client:
        assert ack(client.send_message(oru("AFTER", [cea_obx(1, "7", "20240110")])))[0] == "AA"
    assert "markers.hl7.busy" in agent.all_logs()


def test_csv_import_all_or_nothing(tmp_path: Path, make_agent) -> None:
    a = make_agent()
    env = a.env()
    good = tmp_path / "good.csv"
    good.write_text(
        "patient_id,issuer,marker,date,value,unit,lower_limit,upper_limit\n"
        "MK-2,,CEA,2024-01-10,40,ng/mL,,5\n"
        "MK-2,,CA19-9,2024-01-10,120,U/mL,0,37\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "agent.cli", "markers", "import", str(good)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "imported 2 result(s) for 1 patient(s)" in run.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "patient_id,marker,date,value,unit\nMK-3,CEA,2024-01-10,40,ng/mL\nMK-3,PSA,2024-01-11,4,ng/mL\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "agent.cli", "markers", "import", str(bad)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and "line 3.marker: unknown tumour marker 'PSA'" in run.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "agent.cli", "markers", "list", "MK-2"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert listing.stdout.splitlines() == [
        "2024-01-10 CA 19-9 120 U/mL [0-37]",
        "2024-01-10 CEA 40 ng/mL [-5]",
    ]
    assert a.scalar("SELECT count(*) FROM markers WHERE patient_id = 'MK-3'") == 0
