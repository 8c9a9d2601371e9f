"""The HTTP service: health and readiness, Prometheus metrics, the alerts and response API, the worklist.

* ``/healthz`` (process up), ``/readyz`` (database reachable, schedulers running, DICOM port listening),
  ``/metrics`` (Prometheus text): no authentication, no patient data.
* ``/api/...``: bearer token from ``web.tokens`` (hashed at rest); scope ``read`` for GET, ``acknowledge`` to
  acknowledge an alert. OpenAPI description at ``/openapi.json`` (``/docs`` renders it).
* ``POST /dicomweb/studies``: STOW-RS into the agent (``agent.web.stow``), bearer token with scope ``store``.
* ``/worklist``, ``/studies/{uid}``: server-rendered pages for logged-in users (``web.users``); patient name
  and ID appear only there. Acknowledging from a page needs the session's CSRF token.
"""

import enum
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import and_, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from agent.alerts.models import AlertRecord, AlertState
from agent.alerts.results import CRITERION_LABELS, StoredResult, current_result
from agent.alerts.store import AlertFilter, acknowledge, list_alerts
from agent.config import WebSettings
from agent.db.models import OutputVersion, Patient, Study
from agent.log import get_logger
from agent.pipeline import pairings
from agent.response.model import Severity
from agent.sr.values import iso_da
from agent.web import users as web_users
from agent.web import views
from agent.web.auth import SESSION_COOKIE, Principal, SessionSigner, TokenVerifier
from agent.web.metrics import render_metrics

if TYPE_CHECKING:
    from agent.web.stow import StowService

log = get_logger(__name__)

TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Readiness:
    """Probes of the running service, supplied by ``serve`` (each returns True when healthy)."""

    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)


class StateName(enum.StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class PatientRef(BaseModel):
    id: str
    issuer: str


class AlertOut(BaseModel):
    id: int
    code: str
    severity: str
    state: str
    source: str
    message: str
    citation: str
    timepoint: int | None
    subject: str | None
    revision: int
    study_uid: str | None
    accession_number: str | None
    patient: PatientRef | None
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None


class AlertList(BaseModel):
    count: int
    alerts: list[AlertOut]


class StudyResponse(BaseModel):
    study_uid: str
    accession_number: str | None
    study_date: str | None
    version: int
    kind: str
    created_at: datetime
    timepoint: int | None = Field(description="Index of this study's time point in the assessment arrays")
    assessment: dict[str, Any] = Field(description="Assessment JSON (a key per criterion, then alerts)")
    timeline: dict[str, Any] | None
    alerts: list[AlertOut]


class Problem(BaseModel):
    detail: str


def alert_out(row: AlertRecord) -> AlertOut:
    study = row.study
    patient = row.patient
    return AlertOut(
        id=row.id,
        code=row.code,
        severity=row.severity,
        state=row.state,
        source=row.source,
        message=row.message,
        citation=row.citation,
        timepoint=row.timepoint,
        subject=row.subject,
        revision=row.revision,
        study_uid=study.study_uid if study else None,
        accession_number=study.accession_number if study else None,
        patient=PatientRef(id=patient.patient_id, issuer=patient.issuer) if patient else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
    )


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _fmt_da(da: str | None) -> str:
    return iso_da(da) or da or "—"


def _fmt_name(pn: str | None) -> str:
    if not pn:
        return "—"
    parts = [p for p in pn.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    return f"{family.upper()}, {given}" if given else family.upper()


def create_app(
    settings: WebSettings,
    sessions: sessionmaker[Session],
    readiness: Readiness | None = None,
    stow: "StowService | None" = None,
) -> FastAPI:
    readiness = readiness or Readiness()
    tokens = TokenVerifier(settings.tokens)
    signer = SessionSigner(settings.session_secret.get_secret_value(), settings.session_minutes)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["da"] = _fmt_da
    templates.env.filters["pn"] = _fmt_name
    templates.env.globals["labels"] = CRITERION_LABELS
    templates.env.globals["tone"] = views.CATEGORY_TONE

    app = FastAPI(
        title="liver-agent",
        version="1",
        description="Alerts and tumour-response results of the liver follow-up agent. "
        "API calls need a bearer token (scope read; acknowledge to acknowledge alerts).",
        docs_url="/docs",
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="API token configured (hashed) in web.tokens")

    def db() -> Iterator[Session]:
        with sessions() as session:
            yield session

    def principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        found = tokens.verify(creds.credentials)
        if found is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def reader(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if "read" not in p.scopes and "acknowledge" not in p.scopes:
            raise HTTPException(403, "token lacks the read scope")
        return p

    def acknowledger(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if "acknowledge" not in p.scopes:
            raise HTTPException(403, "token lacks the acknowledge scope")
        return p

    def confirmer(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if "confirm" not in p.scopes:
            raise HTTPException(403, "token lacks the confirm scope")
        return p

    def storer(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if "store" not in p.scopes:
            raise HTTPException(403, "token lacks the store scope")
        return p

    DB = Annotated[Session, Depends(db)]
    auth_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "missing or invalid token"},
        403: {"model": Problem, "description": "token lacks the scope"},
    }

    # -- health ------------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database reachable, schedulers running, DICOM port listening",
        responses={503: {"description": "not ready; the body names the failing checks"}},
    )
    def readyz() -> JSONResponse:
        results: dict[str, bool] = {}
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
            results["database"] = True
        except Exception:
            results["database"] = False
        for name, check in readiness.checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        ok = all(results.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": results}, 200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        body, content_type = render_metrics(sessions)
        return Response(body, media_type=content_type)

    # -- API ---------------------------------------------------------------------------------------------

    @app.get("/api/alerts", tags=["alerts"], summary="List alerts", responses=auth_errors)
    def api_alerts(
        session: DB,
        _: Annotated[Principal, Depends(reader)],
        severity: Annotated[list[Severity] | None, Query(description="repeat to combine")] = None,
        state: Annotated[list[StateName] | None, Query(description="repeat to combine")] = None,
        since: Annotated[date | None, Query(description="created on or after this day (UTC)")] = None,
        until: Annotated[date | None, Query(description="created on or before this day (UTC)")] = None,
        study_uid: Annotated[str | None, Query(max_length=64)] = None,
        code: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> AlertList:
        study_pk = None
        if study_uid is not None:
            study_pk = session.scalar(select(Study.id).where(Study.study_uid == study_uid))
            if study_pk is None:
                return AlertList(count=0, alerts=[])
        rows = list_alerts(
            session,
            AlertFilter(
                severities=[s.value for s in severity or []],
                states=[s.value for s in state or []],
                since=_day_start(since) if since else None,
                until=_day_start(until) + timedelta(days=1) if until else None,
                study_pk=study_pk,
                code=code,
                limit=limit,
                offset=offset,
            ),
        )
        return AlertList(count=len(rows), alerts=[alert_out(r) for r in rows])

    @app.post(
        "/api/alerts/{alert_id}/acknowledge",
        tags=["alerts"],
        summary="Acknowledge an alert",
        responses={**auth_errors, 404: {"model": Problem, "description": "no such alert"}},
    )
    def api_acknowledge(
        alert_id: Annotated[int, PathParam(ge=1, le=2**62)],
        p: Annotated[Principal, Depends(acknowledger)],
    ) -> AlertOut:
        with sessions.begin() as session:
            row = acknowledge(session, alert_id, f"token:{p.name}")
            if row is None:
                raise HTTPException(404, "no such alert")
            return alert_out(row)

    @app.post(
        "/api/studies/{study_uid}/pairings",
        tags=["pairings"],
        summary="Confirm, re-pair or mark new the lesions of a study; the study is assessed again",
        status_code=202,
        responses={**auth_errors, 404: {"model": Problem, "description": "no such study"}},
    )
    def api_pairings(
        study_uid: Annotated[str, PathParam(max_length=64)],
        body: PairingsIn,
        p: Annotated[Principal, Depends(confirmer)],
    ) -> PairingsOut:
        return PairingsOut(job=_record_pairings(study_uid, body, f"token:{p.name}"))

    def _record_pairings(study_uid: str, body: PairingsIn, who: str) -> int:
        decisions = [
            pairings.Decision(d.sr_sop_uid, d.tracking_uid or "", d.decision, d.paired_with, d.lesion_id)
            for d in body.decisions
        ]
        try:
            return pairings.record(sessions, study_uid, decisions, who)
        except pairings.PairingError as exc:
            raise HTTPException(404 if "no such study" in str(exc) else 422, str(exc)) from exc

    def _result_for(session: Session, study_uid: str) -> tuple[Study, StoredResult]:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        result = current_result(session, study.id) if study is not None else None
        if study is None or result is None:
            raise HTTPException(404, "no result for this study")
        return study, result

    @app.get(
        "/api/studies/{study_uid}/response",
        tags=["results"],
        summary="The current response assessment of a study (JSON, or CSV with format=csv)",
        responses={
            **auth_errors,
            404: {"model": Problem, "description": "no result for this study"},
            200: {"content": {"text/csv": {}}},
        },
    )
    def api_response(
        study_uid: Annotated[str, PathParam(max_length=64)],
        session: DB,
        _: Annotated[Principal, Depends(reader)],
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> Any:
        study, result = _result_for(session, study_uid)
        if format == "csv":
            filename = f"response-{study.accession_number or study.id}.csv"
            return Response(
                views.response_csv(result),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
        rows = list_alerts(session, AlertFilter(study_pk=study.id))
        return StudyResponse(
            study_uid=study.study_uid,
            accession_number=study.accession_number,
            study_date=study.study_date,
            version=result.version,
            kind=result.kind,
            created_at=result.created_at,
            timepoint=result.timepoint,
            assessment=result.assessment,
            timeline=result.timeline,
            alerts=[alert_out(r) for r in rows],
        )

    # -- DICOMweb ----------------------------------------------------------------------------------------

    if stow is not None:
        receiver = stow

        @app.post(
            "/dicomweb/studies",
            tags=["dicomweb"],
            summary='STOW-RS: store instances (multipart/related; type="application/dicom")',
            responses={
                **auth_errors,
                200: {"content": {"application/dicom+json": {}}, "description": "every instance stored"},
                202: {"description": "some instances stored; FailedSOPSequence says which failed and why"},
                409: {"description": "no instance stored; FailedSOPSequence says why"},
                400: {"model": Problem, "description": "malformed multipart body"},
                413: {"model": Problem, "description": "larger than web.stow_max_request_mb"},
                415: {"model": Problem, "description": "not multipart/related application/dicom"},
            },
        )
        async def stow_rs(request: Request, p: Annotated[Principal, Depends(storer)]) -> Response:
            return await receiver.receive(request, p.name)

    # -- pages -------------------------------------------------------------------------------------------

    def page_user(request: Request) -> str | None:
        """The user of the request's session, if that session is still open on the server (looked up once
        per request, before the page opens its own database session)."""
        if not hasattr(request.state, "user"):
            session_id = signer.session_id(request.cookies.get(SESSION_COOKIE))
            user = None
            if session_id is not None:
                with sessions() as session:
                    user = web_users.session_user(session, settings.users, session_id)
            request.state.user = user
        found: str | None = request.state.user
        return found

    def login_redirect(request: Request) -> RedirectResponse:
        target = request.url.path
        return RedirectResponse(f"/login?next={target}", status_code=303)

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        cookie = request.cookies.get(SESSION_COOKIE)
        context = {**context, "user": page_user(request), "csrf": signer.csrf(cookie) if cookie else ""}
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/worklist", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/worklist") -> HTMLResponse:
        return render(request, "login.html", {"next": _safe_next(next), "error": None})

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256)],
        next: Annotated[str, Form(max_length=256)] = "/worklist",
    ) -> Response:
        with sessions.begin() as session:
            stored = web_users.authenticate(session, settings.users, username, password)
            lifetime = timedelta(minutes=settings.session_minutes)
            session_id = web_users.open_session(session, username, stored, lifetime) if stored else None
        if session_id is None:
            log.warning("web.login_failed")
            error = "Unknown user or wrong password."
            return render(request, "login.html", {"next": _safe_next(next), "error": error}, 401)
        log.info("web.login", user=username)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            signer.issue(session_id),
            max_age=settings.session_minutes * 60,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:
        session_id = signer.session_id(request.cookies.get(SESSION_COOKIE))
        if session_id is not None:
            with sessions.begin() as session:
                web_users.end_session(session, session_id)
            log.info("web.logout")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/worklist", include_in_schema=False)
    def worklist(
        request: Request,
        severity: str = "",
        alerts: str = "open",
        q: str = "",
        since: str = "",
        until: str = "",
    ) -> Response:
        if page_user(request) is None:
            return login_redirect(request)
        with sessions() as session:
            items = _worklist_items(session, severity, alerts, q[:64], since, until)
            return render(
                request,
                "worklist.html",
                {
                    "items": items,
                    "filters": {
                        "severity": severity,
                        "alerts": alerts,
                        "q": q,
                        "since": since,
                        "until": until,
                    },
                    "now": datetime.now(UTC),
                },
            )

    @app.get("/studies/{study_uid}", include_in_schema=False)
    def study_page(request: Request, study_uid: str) -> Response:
        if page_user(request) is None:
            return login_redirect(request)
        with sessions() as session:
            study = session.scalar(select(Study).where(Study.study_uid == study_uid))
            result = current_result(session, study.id) if study is not None else None
            if study is None or result is None:
                return render(request, "notfound.html", {"study_uid": study_uid}, 404)
            rows = list_alerts(session, AlertFilter(study_pk=study.id))
            return render(
                request,
                "study.html",
                {
                    "study": study,
                    "patient": study.patient,
                    "result": result,
                    "dates": views.timepoint_dates(result),
                    "labels": views.timepoint_labels(result),
                    "lesions": views.lesion_table(result),
                    "context_notes": views.context_notes(result),
                    "criteria": views.criteria_table(result),
                    "site_split": views.site_split(result),
                    "thresholds": views.thresholds(result),
                    "alerts": rows,
                    "spider": views.spider_svg(result),
                    "marker_curve": views.marker_svg(result),
                    "marker_status": views.marker_status(result),
                    "metabolic": views.metabolic_status(result),
                    "pairings": views.pairing_table(result),
                },
            )

    @app.post("/worklist/alerts/{alert_id}/acknowledge", include_in_schema=False)
    def page_acknowledge(request: Request, alert_id: int) -> JSONResponse:
        user = page_user(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if user is None or cookie is None:
            return JSONResponse({"detail": "login required"}, 401)
        token = request.headers.get("X-CSRF-Token", "")
        if not secrets.compare_digest(token, signer.csrf(cookie)):
            return JSONResponse({"detail": "bad CSRF token"}, 403)
        with sessions.begin() as session:
            row = acknowledge(session, alert_id, user)
            if row is None:
                return JSONResponse({"detail": "no such alert"}, 404)
            return JSONResponse(
                {"id": row.id, "state": row.state, "acknowledged_by": row.acknowledged_by,
                 "acknowledged_at": row.acknowledged_at.isoformat() if row.acknowledged_at else None}
            )  # fmt: skip

    @app.post("/studies/{study_uid}/pairings", include_in_schema=False)
    def page_pairings(request: Request, study_uid: str, body: PairingsIn) -> JSONResponse:
        user = page_user(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if user is None or cookie is None:
            return JSONResponse({"detail": "login required"}, 401)
        token = request.headers.get("X-CSRF-Token", "")
        if not secrets.compare_digest(token, signer.csrf(cookie)):
            return JSONResponse({"detail": "bad CSRF token"}, 403)
        try:
            job = _record_pairings(study_uid, body, user)
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, exc.status_code)
        return JSONResponse({"job": job}, 202)

    return app


class DecisionIn(BaseModel):
    """A measurement group of the study (its SR and Tracking UID) that is the same lesion as an earlier one
    (``same``, ``paired_with``) or new; or an earlier lesion (``lesion_id``) absent or not assessed here."""

    sr_sop_uid: str = Field("", max_length=64)
    tracking_uid: str | None = Field(None, max_length=64)
    decision: Literal["same", "new", "absent", "not_assessed"]
    paired_with: str | None = Field(None, max_length=64)
    lesion_id: str = Field("", max_length=64)


class PairingsIn(BaseModel):
    decisions: list[DecisionIn] = Field(min_length=1, max_length=200)


class PairingsOut(BaseModel):
    job: int


def _safe_next(target: str) -> str:
    """Only local paths: no open redirect to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/worklist"
    return target


@dataclass
class WorklistItem:
    study: Study
    patient: Patient
    output: OutputVersion
    critical: int
    warning: int
    info: int
    top_alert: AlertRecord | None
    recist: str | None
    sites: str | None = None  # the response split by site, one line


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _worklist_items(
    session: Session, severity: str, alerts: str, q: str, since: str, until: str
) -> list[WorklistItem]:
    """Studies with a current result: open critical first, then newest study date, then newest result."""
    states = [AlertState.OPEN.value]
    if alerts != "open":
        states.append(AlertState.ACKNOWLEDGED.value)
    query = (
        select(Study, Patient, OutputVersion)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(OutputVersion, and_(OutputVersion.study_pk == Study.id, OutputVersion.current.is_(True)))
    )
    if q:
        like = f"%{q}%"
        query = query.where(
            Study.accession_number.ilike(like) | Patient.patient_id.ilike(like) | Patient.name.ilike(like)
        )
    d0, d1 = _parse_day(since), _parse_day(until)
    if d0:
        query = query.where(Study.study_date >= d0.strftime("%Y%m%d"))
    if d1:
        query = query.where(Study.study_date <= d1.strftime("%Y%m%d"))
    rows = session.execute(query.limit(500)).all()
    counts: dict[int, dict[str, int]] = {}
    for study_pk, sev, n in session.execute(
        select(AlertRecord.study_pk, AlertRecord.severity, func.count())
        .where(AlertRecord.state.in_(states), AlertRecord.study_pk.is_not(None))
        .group_by(AlertRecord.study_pk, AlertRecord.severity)
    ).all():
        if study_pk is not None:
            counts.setdefault(study_pk, {})[sev] = int(n)
    items = []
    for study, patient, output in rows:
        c = counts.get(study.id, {})
        if severity in ("critical", "warning", "info") and not c.get(severity):
            continue
        top = list_alerts(session, AlertFilter(study_pk=study.id, states=states, limit=1))
        result = current_result(session, study.id)
        items.append(
            WorklistItem(
                study=study,
                patient=patient,
                output=output,
                critical=c.get("critical", 0),
                warning=c.get("warning", 0),
                info=c.get("info", 0),
                top_alert=top[0] if top else None,
                recist=result.category("recist") if result else None,
                sites=views.site_summary(result) if result else None,
            )
        )
    items.sort(key=lambda i: (i.study.study_date or "", i.output.created_at), reverse=True)
    items.sort(key=lambda i: i.critical == 0)  # stable: open critical alerts on top, newest first within
    return items
