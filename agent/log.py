"""structlog set-up: stable event names, JSON lines off a terminal, no patient data above DEBUG.

Log with ``log.info("scp.stored", study=uid_hash(study_uid), ...)``. Fields whose names are known to carry
patient data are dropped from any record above DEBUG, and fields named like a UID are hashed, so a mistake
in a call site cannot leak a name or an identifier into an operator's log.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

# Field names that may hold patient data; removed above DEBUG.
PHI_FIELDS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "patient_sex",
        "patient_age",
        "patientname",
        "patientid",
        "patientbirthdate",
        "accession_number",
        "accession",
        "other_patient_ids",
        "issuer_of_patient_id",
        "referring_physician",
        "institution",
        "study_description",
        "series_description",
    }
)
# Field names that hold UIDs; hashed above DEBUG when a raw UID slips through.
UID_FIELDS = frozenset(
    {"study_uid", "series_uid", "sop_uid", "sop_instance_uid", "study_instance_uid", "uid"}
)


def uid_hash(uid: str | None) -> str:
    """A short, stable, non-reversible token for a UID (12 hex digits of SHA-256)."""
    if not uid:
        return "-"
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


def _scrub(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if method == "debug":
        return event_dict
    for key in list(event_dict):
        low = key.lower()
        if low in PHI_FIELDS:
            del event_dict[key]
        elif low in UID_FIELDS and isinstance(event_dict[key], str):
            event_dict[key] = uid_hash(event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and the standard logging bridge (pynetdicom, APScheduler, alembic)."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    numeric = logging.getLevelName(level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (print() writes the line and its newline apart, which lets the lines of
        # several receiver processes sharing the output interleave).
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through the standard library. pynetdicom at DEBUG dumps whole datasets
    # (patient names included), so it never goes below WARNING unless we run at DEBUG ourselves.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    third_party = numeric if level == "DEBUG" else max(numeric, logging.WARNING)
    for name in ("pynetdicom", "apscheduler", "alembic", "sqlalchemy", "highdicom", "pydicom"):
        logging.getLogger(name).setLevel(third_party)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def stack_frames(exc: BaseException, limit: int = 40) -> list[str]:
    """Where ``exc`` was raised, as ``file:line function`` frames (innermost last), for a bug report.

    Frames only: no local variables and no exception message, which may hold patient data. Chained causes
    are included (``caused by`` lines), file paths relative to the ``agent`` package where possible.
    """
    out: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if out:
            out.append(f"caused by {type(current).__name__}")
        for frame in traceback.extract_tb(current.__traceback__)[-limit:]:
            name = frame.filename
            marker = name.rfind("/agent/")
            if marker >= 0:
                name = name[marker + 1 :]
            out.append(f"{name}:{frame.lineno} {frame.name}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out
