"""Which studies the pipeline works on, which criteria it applies (docs/criteria.md §0), and how a failing
study and a silent PACS show up in the alerts store. No Orthanc: the PACS of the last tests is a pynetdicom
127.0.0.1 (or nothing at all on a free port)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from support.agentproc import free_port
from support.dicom_peer import DicomPeer
from support.worklist import migrated_sessions

from agent.config import AssessSettings, ClassifySettings, PatientRuleSettings, Settings
from agent.db.models import AlertRecord, Instance, Job, Patient, Series, Study
from agent.pipeline import jobs
from agent.pipeline.classify import SeriesFacts, choose_context, classify, default_criteria, read_series_facts
from agent.pipeline.worker import Deps, Worker
from agent.response.model import Criterion
from tests.unit.sr.srgen import ct_image

R, CHOI, CHUN, IR, MR, EASL = (
    Criterion.RECIST,
    Criterion.CHOI,
    Criterion.CHUN,
    Criterion.IRECIST,
    Criterion.MRECIST,
    Criterion.EASL,
)
RULES = ClassifySettings()
NO_MATCH = "no series matches the liver follow-up rules"
NO_MODALITY = "no image series of an accepted modality"


def series(
    modality: str = "CT",
    body_part: str = "",
    study_description: str = "",
    series_description: str = "",
    codes: tuple[str, ...] = (),
    uid: str = "1.2.3.4",
) -> SeriesFacts:
    return SeriesFacts(
        series_uid=uid, modality=modality, body_part=body_part, study_description=study_description,
        series_description=series_description, procedure_codes=codes, attributes={},
        slice_thickness_mm=None, contrast_agent=None, contrast_route=None,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# Classification


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (series(body_part="ABDOMEN"), "body part"),
        (series(body_part="CHEST_ABDOMEN"), "body part"),
        (series("MR", body_part="LIVER"), "body part"),
        (series("MR", study_description="MRT Leber Verlauf"), "description"),
        (series(series_description="Portal venous liver 70s"), "description"),
        (series(study_description="CT TAP restaging"), "description"),
    ],
)
def test_liver_follow_up_by_body_part_or_description(facts: SeriesFacts, reason: str) -> None:
    assert classify([facts], RULES) == (True, reason)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (series(body_part="HEAD", study_description="CT HEAD"), NO_MATCH),
        (series("US", body_part="ABDOMEN", study_description="US LIVER"), NO_MODALITY),
        (series("SR", study_description="CT ABDOMEN"), NO_MODALITY),
        (series("PT", body_part="ABDOMEN"), NO_MODALITY),
        (series(body_part="KNEE", study_description="CT knee"), NO_MATCH),
    ],
)  # fmt: skip
def test_other_studies_are_ignored(facts: SeriesFacts, reason: str) -> None:
    assert classify([facts], RULES) == (False, reason)


def test_no_series_at_all_is_ignored() -> None:
    assert classify([], RULES) == (False, "no image series of an accepted modality")


def test_exclusion_removes_a_series_even_with_a_liver_body_part() -> None:
    spine = series(
        body_part="ABDOMEN", study_description="CT ABDOMEN", series_description="spine bone window"
    )
    assert classify([spine], RULES) == (False, "no series matches the liver follow-up rules")
    # Another series of the same study that is not excluded still makes it a follow-up.
    liver = series(body_part="ABDOMEN", series_description="portal venous", uid="1.2.3.5")
    assert classify([spine, liver], RULES) == (True, "body part")
    # An excluded series does not qualify through a procedure code either.
    coded = ClassifySettings(procedure_codes=["RPID16"])
    brain = series(study_description="CT brain", codes=("RPID16", "RADLEX:RPID16"))
    assert classify([brain], coded)[0] is False


def test_procedure_code_qualifies_on_its_own() -> None:
    coded = ClassifySettings(procedure_codes=["RADLEX:RPID145"])
    bare = series(codes=("RPID145", "RADLEX:RPID145"))  # no body part, no description
    assert classify([bare], RULES) == (False, "no series matches the liver follow-up rules")
    assert classify([bare], coded) == (True, "procedure code")
    assert classify([series(codes=("RPID145", "LN:RPID145"))], coded)[0] is False  # other scheme


def test_rules_are_configurable() -> None:
    ct_only = ClassifySettings(modalities=["CT"], body_part_pattern=r"^liver$", description_pattern=r"hcc")
    assert classify([series("MR", body_part="LIVER")], ct_only)[0] is False
    assert classify([series(body_part="ABDOMEN")], ct_only)[0] is False
    assert classify([series(body_part="liver")], ct_only) == (True, "body part")
    assert classify([series(study_description="HCC surveillance")], ct_only) == (True, "description")
    no_exclusion = ClassifySettings(exclude_pattern="")
    assert classify([series(body_part="ABDOMEN", study_description="head and abdomen")], no_exclusion)[0]


def test_facts_come_from_the_header_with_procedure_codes_and_request_attributes(tmp_path: Path) -> None:
    ds = ct_image("PIDC", "classify", date(2024, 3, 1), description="Leber pv")
    ds.BodyPartExamined = "ABDOMEN"
    ds.StudyDescription = "CT Abdomen GIST"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPID145", "RADLEX", "CT ABD W"
    ds.ProcedureCodeSequence = [code]
    request = Dataset()
    request.ReasonForTheRequestedProcedure = "restaging on imatinib"
    ds.RequestAttributesSequence = [request]
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    facts = read_series_facts(path, str(ds.SeriesInstanceUID), "CT")
    assert (facts.modality, facts.body_part, facts.series_description) == ("CT", "ABDOMEN", "Leber pv")
    assert facts.procedure_codes == ("RPID145", "RADLEX:RPID145")
    assert facts.attributes["reason_for_procedure"] == "restaging on imatinib"
    assert (facts.slice_thickness_mm, facts.contrast_agent) == ("2.5", "Iomeprol")
    assert classify([facts], ClassifySettings(procedure_codes=["RPID145"])) == (True, "procedure code")
    # An unreadable file classifies on what the index knows (its modality), without raising.
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom")
    assert read_series_facts(broken, "1.2.3", "mr").modality == "MR"


# ------------------------------------------------------------------------------------------------------
# Criteria (docs/criteria.md §0)

DEFAULTS = AssessSettings()


def context(**attrs: str):
    return choose_context(attrs, DEFAULTS)


def test_default_is_recist_only() -> None:
    ctx = context(study_description="CT ABDOMEN FOLLOW-UP")
    assert (ctx.primary, ctx.therapy, ctx.criteria) == ("unknown", (), (R,))


@pytest.mark.parametrize(
    ("attrs", "primary", "criteria"),
    [
        ({"study_description": "CT ABD GIST follow-up"}, "GIST", (R, CHOI)),
        ({"admitting_diagnoses": "gastrointestinal stromal tumour"}, "GIST", (R, CHOI)),
        ({"reason_for_procedure": "CRLM on FOLFOX + bevacizumab"}, "CRC", (R, CHUN)),
        ({"admitting_diagnoses": "colorectal ca", "reason_for_procedure": "Avastin"}, "CRC", (R, CHUN)),
        ({"admitting_diagnoses": "colorectal cancer on FOLFOX"}, "CRC", (R,)),
        ({"reason_for_procedure": "RCC on bevacizumab"}, "unknown", (R,)),
        ({"reason_for_procedure": "melanoma, pembrolizumab"}, "unknown", (R, IR)),
        ({"study_description": "HCC after TACE"}, "HCC", (R, MR, EASL)),
        ({"admitting_diagnoses": "hepatocellular", "reason_for_procedure": "atezolizumab bevacizumab"},
         "HCC", (R, IR, MR, EASL)),
        ({"reason_for_procedure": "CRC bevacizumab nivolumab"}, "CRC", (R, CHUN, IR)),
    ],
)  # fmt: skip
def test_criteria_follow_the_primary_and_therapy_found_in_the_study(
    attrs: dict[str, str], primary: str, criteria: tuple[Criterion, ...]
) -> None:
    ctx = context(**attrs)
    assert ctx.primary == primary
    assert ctx.criteria == criteria


def test_default_criteria_table() -> None:
    io = DEFAULTS.immunotherapy
    assert default_criteria("unknown", [], io) == (R,)
    assert default_criteria("gist", ["imatinib"], io) == (R, CHOI)
    assert default_criteria("CRC", ["Bevacizumab"], io) == (R, CHUN)
    assert default_criteria("CRLM", ["bevacizumab"], io) == (R, CHUN)
    assert default_criteria("CRC", ["cetuximab"], io) == (R,)
    assert default_criteria("NSCLC", ["Pembrolizumab"], io) == (R, IR)
    assert default_criteria("HCC", [], io) == (R, MR, EASL)


def test_a_configured_rule_wins_over_the_study_text() -> None:
    settings = AssessSettings(
        rules=[
            PatientRuleSettings(match={"patient_id": r"^TRIAL-"}, primary="GIST", therapy=["imatinib"],
                                treatment_start="2024-01-15"),
            PatientRuleSettings(match={"clinical_trial_protocol_id": "NCT0001"}, primary="CRC",
                                therapy=["FOLFIRI"], criteria=["RECIST1.1", "mChoi"]),
        ]
    )  # fmt: skip
    ctx = choose_context({"patient_id": "TRIAL-7", "study_description": "HCC"}, settings)
    assert (ctx.primary, ctx.therapy, ctx.criteria) == ("GIST", ("imatinib",), (R, CHOI))
    assert ctx.treatment_start == date(2024, 1, 15)
    ctx = choose_context({"patient_id": "P1", "clinical_trial_protocol_id": "NCT0001"}, settings)
    assert ctx.criteria == (R, Criterion.MCHOI)  # explicit criteria replace the table
    ctx = choose_context({"patient_id": "P2", "study_description": "HCC"}, settings)
    assert ctx.primary == "HCC"  # no rule matched: detection from the study


def test_detection_can_be_switched_off_for_configured_defaults() -> None:
    settings = AssessSettings(detect_from_study=False, default_primary="CRC", default_therapy=["bevacizumab"])
    ctx = choose_context({"study_description": "GIST pembrolizumab"}, settings)
    assert (ctx.primary, ctx.therapy, ctx.criteria) == ("CRC", ("bevacizumab",), (R, CHUN))


def test_immunotherapy_list_is_configurable() -> None:
    settings = AssessSettings(immunotherapy=["tislelizumab"])
    assert choose_context({"reason_for_procedure": "tislelizumab"}, settings).criteria == (R, IR)
    assert choose_context({"reason_for_procedure": "pembrolizumab"}, settings).criteria == (R,)


# ------------------------------------------------------------------------------------------------------
# The worker: a silent PACS, a failed study, and both resolved


def indexed_liver_study(sessions, spool: Path) -> tuple[int, str]:
    ds = ct_image("PIDW", "worker", date(2024, 3, 1))
    ds.BodyPartExamined = "ABDOMEN"
    rel = Path("worker") / "ct.dcm"
    (spool / rel).parent.mkdir(parents=True)
    ds.save_as(spool / rel, enforce_file_format=True)
    now = datetime.now(UTC)
    with sessions.begin() as s:
        patient = Patient(patient_id="PIDW", issuer="", name="Test^Patient", birth_date="19600101")
        s.add(patient)
        s.flush()
        study = Study(
            study_uid=str(ds.StudyInstanceUID), patient_pk=patient.id, study_date="20240301", state="stable",
            first_received_at=now, last_received_at=now, receiving_since=now, updated_at=now,
        )  # fmt: skip
        s.add(study)
        s.flush()
        series_row = Series(series_uid=str(ds.SeriesInstanceUID), study_pk=study.id, modality="CT")
        s.add(series_row)
        s.flush()
        s.add(
            Instance(
                sop_uid=str(ds.SOPInstanceUID), series_pk=series_row.id, sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), path=str(rel), size=1,
                received_at=now,
            )
        )  # fmt: skip
        jobs.enqueue(s, jobs.PROCESS_STUDY, study.id)
        return study.id, str(ds.StudyInstanceUID)


def worker_settings(tmp_path: Path, spool: Path, port: int, **pipeline: object) -> Settings:
    return Settings(
        storage={"spool_dir": str(spool), "min_free_mb": 0},
        peers={"pacs": {"ae_title": "TESTPACS", "host": "127.0.0.1", "port": port, "acse_timeout_s": 5,
                        "store": False}},
        pipeline={"results_dir": str(tmp_path / "results"), **pipeline},
        alerts={"pacs_unreachable_after_s": 0, "sinks": {"log": {"type": "log"}}},
    )  # fmt: skip


def make_due(sessions, study_pk: int) -> None:  # type: ignore[no-untyped-def]
    """The back-off has passed: the job may be claimed again."""
    with sessions.begin() as s:
        job = s.scalars(select(Job).where(Job.study_pk == study_pk, Job.state == "pending")).one()
        job.not_before = None


def test_a_pacs_outage_never_fails_the_study_and_backs_off_up_to_the_cap(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    spool = tmp_path / "spool"
    port = free_port()  # the PACS is down: nothing listens
    settings = worker_settings(tmp_path, spool, port, max_attempts=2, retry_after_s=1, outage_retry_max_s=5)
    try:
        study_pk, _ = indexed_liver_study(sessions, spool)
        worker = Worker(Deps(settings, sessions))
        delays = []
        for _ in range(6):  # three times max_attempts
            assert worker.run_one()
            with sessions() as s:
                job = s.scalars(select(Job).where(Job.study_pk == study_pk)).one()
                assert (job.state, job.attempts, s.get(Study, study_pk).state) == ("pending", 0, "stable")
                assert (job.last_error or "").startswith("pacs: ")
                delays.append(round((job.not_before - job.updated_at).total_seconds(), 3))
                alerts = {(a.code, a.state) for a in s.scalars(select(AlertRecord))}
            assert alerts == {("PACS_UNREACHABLE", "open")}  # and never STUDY_FAILED
            assert not worker.run_one()  # waiting out its back-off
            make_due(sessions, study_pk)
        assert delays == [1, 2, 4, 5, 5, 5]
        # The PACS answers again (no prior studies): the same job completes on its first real attempt.
        peer = DicomPeer(port=port).start()
        try:
            assert worker.run_one()
        finally:
            peer.stop()
        assert peer.finds == 1
        with sessions() as s:
            assert s.get(Study, study_pk).state == "done"
            (job,) = s.scalars(select(Job))
            assert (job.state, job.attempts, job.outage_retries) == ("done", 1, 0)
            alerts = {(a.code, a.state) for a in s.scalars(select(AlertRecord))}
        assert alerts == {("PACS_UNREACHABLE", "resolved")}
    finally:
        sessions.kw["bind"].dispose()


def test_a_refusing_pacs_uses_up_the_attempts_then_study_failed_until_reprocessed(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    spool = tmp_path / "spool"
    # C-FIND answered 0xA700 (out of resources: busy, an outage) then 0xC000 twice (refused: real failures).
    peer = DicomPeer(find_statuses=[0xA700, 0xC000, 0xC000]).start()
    settings = worker_settings(tmp_path, spool, peer.port, max_attempts=2, retry_after_s=0)
    try:
        study_pk, _ = indexed_liver_study(sessions, spool)
        worker = Worker(Deps(settings, sessions))
        assert worker.run_one()
        make_due(sessions, study_pk)
        with sessions() as s:
            job = s.scalars(select(Job)).one()
            assert (job.state, job.attempts, job.outage_retries) == ("pending", 0, 1)
        assert worker.run_one()  # refused: attempt 1 of 2
        with sessions() as s:
            job = s.scalars(select(Job)).one()
            assert (job.state, job.attempts, job.outage_retries) == ("pending", 1, 0)
            assert "0xC000" in (job.last_error or "")
        assert worker.run_one()  # refused again: failed for good
        with sessions() as s:
            assert s.get(Study, study_pk).state == "failed"
            alerts = {(a.code, a.subject, a.state) for a in s.scalars(select(AlertRecord))}
        assert alerts == {("STUDY_FAILED", f"study:{study_pk}", "open")}
        # The operator reprocesses the study; the PACS answers (no prior studies).
        with sessions.begin() as s:
            jobs.enqueue(s, jobs.PROCESS_STUDY, study_pk)
            s.get(Study, study_pk).state = "stable"
        assert worker.run_one()
        assert peer.finds == 4
        with sessions() as s:
            assert s.get(Study, study_pk).state == "done"
            alerts = {(a.code, a.state, a.study_pk) for a in s.scalars(select(AlertRecord))}
            assert [j.state for j in s.scalars(select(Job).order_by(Job.id))] == ["failed", "done"]
        assert alerts == {("STUDY_FAILED", "resolved", study_pk)}
    finally:
        peer.stop()
        sessions.kw["bind"].dispose()
