"""The ``Peer`` interface: what the pipeline asks of a PACS, whatever protocol it speaks.

A peer finds a patient's studies, a study's series and a series' instances, retrieves instances into the
agent, stores our results, answers an echo, and says of any failure whether it is worth retrying
(:meth:`Peer.classify_failure`). Adding a kind of peer is one new class: subclass ``Peer``, set ``kind``
(the ``peers.<name>.type`` value) and implement the abstract methods; the registry (:func:`build_peer`)
finds it by ``type``. ``agent.peers.dimse`` is the DIMSE implementation (C-ECHO, C-FIND, C-MOVE/C-GET,
C-STORE); ``agent.peers.dicomweb`` the DICOMweb one (QIDO-RS, WADO-RS, STOW-RS).

Peers never touch the database: the callers (``agent.pipeline.priors``, ``agent.pipeline.outbox``, the
``echo`` command) record what happened. Nothing here logs patient data.
"""

from __future__ import annotations

import contextlib
import importlib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from agent.config import PeerCommon

T = TypeVar("T")


class Outcome(StrEnum):
    """What became of one operation: done, worth retrying later, or refused for good."""

    OK = "ok"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class PeerError(Exception):
    """An operation with a peer did not complete; ``outcome`` says whether retrying may help.

    The message names the peer and the operation, never patient data. ``status`` is the peer's answer (a
    DICOM status, or an HTTP status for DICOMweb); ``retry_after_s`` the wait the peer asked for, if any.
    """

    def __init__(
        self,
        message: str,
        outcome: Outcome = Outcome.TRANSIENT,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        return self.outcome is not Outcome.PERMANENT


class PeerUnreachable(PeerError):
    """No answer at all: no connection, refused, timeout, abort. Always transient."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Outcome.TRANSIENT)


@dataclass(frozen=True, slots=True)
class StudyMatch:
    study_uid: str
    study_date: str | None
    modalities: tuple[str, ...]
    description: str | None


@dataclass(frozen=True, slots=True)
class SeriesMatch:
    study_uid: str
    series_uid: str
    modality: str | None
    description: str | None
    # Further return keys asked for (``keys``), by DICOM keyword; empty string when the peer left them empty.
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InstanceMatch:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def series_matches(
    study_uid: str,
    answers: Iterable[T],
    value: Callable[[T, str], str],
    modality: str | None,
    keys: Sequence[str],
) -> list[SeriesMatch]:
    """The series of ``answers`` (read with ``value(answer, keyword)``), whatever the transport.

    A peer that ignores the modality key is filtered here; a series without one is kept.
    """
    out = []
    for answer in answers:
        uid = value(answer, "SeriesInstanceUID")
        found_modality = value(answer, "Modality") or None
        if not uid:
            continue
        if modality and found_modality and found_modality.upper() != modality.upper():
            continue
        out.append(
            SeriesMatch(
                study_uid=study_uid,
                series_uid=uid,
                modality=found_modality,
                description=value(answer, "SeriesDescription") or None,
                attributes={k: value(answer, k) for k in keys},
            )
        )
    return out


def instance_matches(
    study_uid: str,
    series_uid: str,
    answers: Iterable[T],
    value: Callable[[T, str], str],
    keys: Sequence[str],
    sop_uids: Sequence[str] = (),
) -> list[InstanceMatch]:
    """The instances of ``answers``, restricted to ``sop_uids`` when given (list matching varies by peer)."""
    wanted = set(sop_uids)
    return [
        InstanceMatch(
            study_uid,
            series_uid,
            sop,
            value(answer, "SOPClassUID") or None,
            {k: value(answer, k) for k in keys},
        )
        for answer in answers
        if (sop := value(answer, "SOPInstanceUID")) and (not wanted or sop in wanted)
    ]


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    completed: int
    failed: int
    warning: int

    def __add__(self, other: RetrieveResult) -> RetrieveResult:
        return RetrieveResult(
            self.completed + other.completed, self.failed + other.failed, self.warning + other.warning
        )


@dataclass(frozen=True, slots=True)
class StoreItem:
    path: Path
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class StoreResult:
    item: StoreItem
    outcome: Outcome
    status: int | None
    detail: str
    # The peer asked us to wait this long before trying again (HTTP Retry-After).
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Receiver:
    """Where retrieved instances go: our own AE title (a C-MOVE destination), the handler that files an
    instance arriving on the peer's own connection (C-GET: the listener's C-STORE handler), and the function
    that files one retrieved Part 10 file (WADO-RS: the listener's ``store_file``, origin ``retrieved``);
    each returns the DICOM status of the filing."""

    ae_title: str
    handle_store: Callable[[Any], int] | None = None
    # (Part 10 bytes, the peer's name) -> DICOM status
    store_file: Callable[[bytes | memoryview, str], int] | None = None


class PeerConfigError(ValueError):
    """A peer's settings name an unknown type; the message names ``peers.<name>.type``."""


class Peer(ABC):
    """One configured remote node. Each call opens and closes what it needs, except inside :meth:`session`."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Peer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if isinstance(kind, str):
            Peer.registry[kind] = cls

    def __init__(
        self, name: str, settings: PeerCommon, calling_aet: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.calling_aet = calling_aet
        self.tls = tls

    # -- the interface -----------------------------------------------------------------------------------

    @abstractmethod
    def echo(self) -> None:
        """Check the peer answers; raise :class:`PeerError` otherwise."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Group the queries made inside the block (over one association where the protocol allows)."""
        yield

    @abstractmethod
    def find_studies(
        self,
        patient_id: str,
        issuer: str | None,
        since: date | None,
        until: date | None,
        modalities: Sequence[str],
    ) -> list[StudyMatch]:
        """Studies of the patient (Patient ID, plus Issuer when known) in the date window with a modality."""

    @abstractmethod
    def find_series(
        self, study_uid: str, modality: str | None = None, keys: Sequence[str] = ()
    ) -> list[SeriesMatch]:
        """The series of a study (of one modality when given), with the extra return ``keys``."""

    @abstractmethod
    def find_instances(
        self, study_uid: str, series_uid: str, keys: Sequence[str] = (), sop_uids: Sequence[str] = ()
    ) -> list[InstanceMatch]:
        """The instances of a series (only ``sop_uids`` when given), with the extra return ``keys`` (e.g.
        ``SliceThickness``)."""

    @abstractmethod
    def retrieve(self, instances: Sequence[InstanceMatch], receiver: Receiver) -> RetrieveResult:
        """Bring the instances to the agent; they are filed by our listener like any received instance."""

    @abstractmethod
    def store(self, items: Sequence[StoreItem]) -> list[StoreResult]:
        """Send each file; one result per item, in order. Raise :class:`PeerUnreachable` when nothing could
        be sent at all."""

    def classify_failure(self, exc: BaseException) -> Outcome:
        """Transient (retry later: the peer is away or busy) or permanent (it refuses for good)."""
        if isinstance(exc, PeerError):
            return Outcome.TRANSIENT if exc.transient else Outcome.PERMANENT
        if isinstance(exc, OSError | TimeoutError):
            return Outcome.TRANSIENT
        return Outcome.PERMANENT

    # -- helpers -----------------------------------------------------------------------------------------

    def find_sr_instances(self, study_uid: str) -> list[InstanceMatch]:
        """The SR instances of a study: its SR series, then their instances."""
        out: list[InstanceMatch] = []
        for series in self.find_series(study_uid, "SR"):
            out += self.find_instances(study_uid, series.series_uid)
        return out


# The module of each kind of peer, imported only when a peer of that kind is built.
IMPLEMENTATIONS = {"dimse": "agent.peers.dimse", "dicomweb": "agent.peers.dicomweb"}


def build_peer(name: str, settings: PeerCommon, calling_aet: str, tls: ssl.SSLContext | None = None) -> Peer:
    """The peer for ``peers.<name>`` (its ``type`` picks the class); ``tls`` secures its connections."""
    # The implementations register themselves on import.
    if settings.type in IMPLEMENTATIONS:
        importlib.import_module(IMPLEMENTATIONS[settings.type])
    cls = Peer.registry.get(settings.type)
    if cls is None:
        known = ", ".join(sorted(Peer.registry))
        raise PeerConfigError(f"peers.{name}.type: unknown peer type {settings.type!r} (known: {known})")
    return cls(name, settings, calling_aet, tls)


def peers_for(
    peers: Mapping[str, PeerCommon], calling_aet: str, *, query_retrieve: bool = False, store: bool = False
) -> list[Peer]:
    """The configured peers used for query/retrieve and/or as store destinations, in configuration order."""
    return [
        build_peer(name, p, calling_aet)
        for name, p in peers.items()
        if (not query_retrieve or p.query_retrieve) and (not store or p.store)
    ]
