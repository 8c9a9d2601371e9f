"""The DICOMweb peer: a PACS or imaging store reached over HTTP(S) with ``dicomweb-client``.

* **QIDO-RS** (search): :meth:`echo` (one study search, limit 1), :meth:`find_studies` (Patient ID, Issuer,
  StudyDate range, ModalitiesInStudy), :meth:`find_series` and :meth:`find_instances` (with the extra
  attributes asked for as ``includefield``, e.g. ``SliceThickness`` for the acquisition context).
* **WADO-RS** (retrieve): :meth:`retrieve` fetches each instance in the transfer syntax it is stored in
  (``application/dicom; transfer-syntax=*``) and files it through the listener (``Receiver.store_file``)
  with origin ``retrieved``, exactly as an instance answering our C-MOVE or C-GET.
* **STOW-RS** (store): :meth:`store` posts our results, several per request up to ``stow_batch_mb``, and
  reads the per-instance answer (``ReferencedSOPSequence`` / ``FailedSOPSequence`` with ``FailureReason``).

Failures: no connection, a timeout or a broken TLS handshake is :class:`PeerUnreachable`; HTTP 5xx, 408 and
429 are transient, every other 4xx (409 Conflict included) is permanent; a ``Retry-After`` header travels
with the error (``retry_after_s``) and the outbox waits at least that long. A failed instance of a STOW-RS
answer is transient when its FailureReason is 0xA7xx (out of resources), permanent otherwise.

The library's own retries are off (the outbox and the job queue retry, with their back-off). Secrets come
from the configuration or the environment (``password_env``, ``token_env``) and never reach the log.
"""

from __future__ import annotations

import io
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import tag_for_keyword

from agent.config import DicomwebPeerSettings, PeerCommon
from agent.log import get_logger
from agent.peers.base import (
    InstanceMatch,
    Outcome,
    Peer,
    PeerError,
    PeerUnreachable,
    Receiver,
    RetrieveResult,
    SeriesMatch,
    StoreItem,
    StoreResult,
    StudyMatch,
    instance_matches,
    series_matches,
)

log = get_logger(__name__)

Service = Literal["qido", "wado", "stow"]
T = TypeVar("T")

# HTTP statuses that mean "not now" although they are 4xx.
TRANSIENT_4XX = frozenset({408, 429})
# Any transfer syntax the server holds the instance in (stored as received, no transcoding).
AS_STORED = (("application/dicom", "*"),)
SUCCESS_STATUSES = frozenset({0x0000})


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r}")
    return f"{tag:08X}"


def _json_value(item: dict[str, Any], keyword: str) -> str:
    """The value of ``keyword`` in a DICOM JSON object, multiple values joined by a backslash."""
    element = item.get(_tag(keyword)) or {}
    values = element.get("Value") or []
    out = []
    for v in values:
        if isinstance(v, dict):  # a person name
            out.append(str(v.get("Alphabetic", "")))
        else:
            out.append(str(v))
    return "\\".join(out)


def _dicom_date(d: date) -> str:
    return d.strftime("%Y%m%d")


def retry_after(response: requests.Response | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if response is None:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def http_outcome(status: int) -> Outcome:
    """5xx, 408 and 429: transient; any other 4xx (409 Conflict included): permanent."""
    if status >= 500 or status in TRANSIENT_4XX:
        return Outcome.TRANSIENT
    if status >= 400:
        return Outcome.PERMANENT
    return Outcome.OK


def failure_outcome(reason: int | None) -> Outcome:
    """A STOW-RS FailureReason: out of resources (0xA7xx) is worth retrying, anything else is not."""
    if reason is not None and 0xA700 <= reason <= 0xA7FF:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


class DicomwebPeer(Peer):
    kind = "dicomweb"
    settings: DicomwebPeerSettings

    def __init__(
        self, name: str, settings: PeerCommon, calling_aet: str, tls: ssl.SSLContext | None = None
    ) -> None:
        assert isinstance(settings, DicomwebPeerSettings)
        super().__init__(name, settings, calling_aet, tls)
        self._clients: dict[Service, DICOMwebClient] = {}

    # -- connection --------------------------------------------------------------------------------------

    def _secret(self, value: Any, env: str | None, what: str) -> str:
        if value is not None:
            return str(value.get_secret_value())
        if env and os.environ.get(env):
            return os.environ[env]
        raise PeerError(f"{self.name}: {what} not configured (nor in ${env})", Outcome.PERMANENT)

    def _http(self, url: str) -> requests.Session:
        """An HTTP session for one service root: authentication, TLS verification, bounded answers."""
        s = self.settings
        session = requests.Session()
        session.verify = str(s.ca_file) if (s.tls_verify and s.ca_file) else s.tls_verify
        if s.ca_file or not s.tls_verify:
            # The configured verification wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, which requests
            # would otherwise prefer; proxies still come from the environment.
            session.trust_env = False
            session.proxies = requests.utils.get_environ_proxies(url)
        if s.auth == "basic":
            session.auth = (s.username or "", self._secret(s.password, s.password_env, "password"))
        elif s.auth == "bearer":
            session.headers["Authorization"] = "Bearer " + self._secret(s.token, s.token_env, "token")
        limit = int(s.max_instance_mb * 1024 * 1024)

        def bounded(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                response.close()
                raise PeerError(
                    f"{self.name}: answer of {int(length)} bytes exceeds max_instance_mb",
                    Outcome.PERMANENT,
                )
            return response

        session.hooks["response"].append(bounded)
        return session

    def _client(self, service: Service) -> DICOMwebClient:
        client = self._clients.get(service)
        if client is None:
            s = self.settings
            try:
                url = s.service_url(service)
            except ValueError as exc:
                raise PeerError(f"{self.name}: {exc}", Outcome.PERMANENT) from None
            client = DICOMwebClient(
                url, session=self._http(url), timeout=(s.connect_timeout_s, s.read_timeout_s)
            )
            client.set_http_retry_params(retry=False)
            self._clients[service] = client
        return client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request; turn the library's and the network's errors into :class:`PeerError`."""
        try:
            return fn()
        except PeerError:
            raise
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else None
            outcome = http_outcome(status) if status is not None else Outcome.TRANSIENT
            raise PeerError(
                f"{self.name}: {what} failed with HTTP {status}", outcome, status, retry_after(response)
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PeerUnreachable(f"{self.name}: {what}: no answer ({type(exc).__name__})") from None
        except (requests.exceptions.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            # an answer the library could not decode
            raise PeerError(f"{self.name}: {what}: unusable answer ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise PeerError(f"{self.name}: {what}: {type(exc).__name__}") from None
        except Exception as exc:  # anything else the client raises must not end the job or the round
            raise PeerError(f"{self.name}: {what}: failed ({type(exc).__name__})") from None

    # -- the interface -----------------------------------------------------------------------------------

    def echo(self) -> None:
        client = self._client("qido")
        self._call("QIDO-RS probe", lambda: client.search_for_studies(limit=1, fields=["StudyInstanceUID"]))

    def find_studies(
        self,
        patient_id: str,
        issuer: str | None,
        since: date | None,
        until: date | None,
        modalities: Sequence[str],
    ) -> list[StudyMatch]:
        filters: dict[str, Any] = {"PatientID": patient_id}
        if issuer:
            filters["IssuerOfPatientID"] = issuer
        if since or until:
            filters["StudyDate"] = (
                f"{_dicom_date(since) if since else ''}-{_dicom_date(until) if until else ''}"
            )
        client = self._client("qido")
        fields = ["StudyDate", "StudyDescription", "ModalitiesInStudy"]
        found = self._call(
            "QIDO-RS study search",
            lambda: client.search_for_studies(fields=fields, search_filters=filters),
        )
        wanted = {m.upper() for m in modalities}
        out = []
        for item in found:
            uid = _json_value(item, "StudyInstanceUID")
            if not uid:
                continue
            mods = tuple(m for m in _json_value(item, "ModalitiesInStudy").split("\\") if m)
            # The modality filter is applied here (one query whatever the server's list matching); an
            # empty list is kept (unknown).
            if wanted and mods and not wanted.intersection(m.upper() for m in mods):
                continue
            out.append(
                StudyMatch(
                    study_uid=uid,
                    study_date=_json_value(item, "StudyDate") or None,
                    modalities=mods,
                    description=_json_value(item, "StudyDescription") or None,
                )
            )
        return out

    def find_series(
        self, study_uid: str, modality: str | None = None, keys: Sequence[str] = ()
    ) -> list[SeriesMatch]:
        client = self._client("qido")
        filters = {"Modality": modality} if modality else None
        fields = ["Modality", "SeriesDescription", *keys]
        found = self._call(
            "QIDO-RS series search",
            lambda: client.search_for_series(study_uid, fields=fields, search_filters=filters),
        )
        return series_matches(study_uid, found, _json_value, modality, keys)

    def find_instances(
        self, study_uid: str, series_uid: str, keys: Sequence[str] = (), sop_uids: Sequence[str] = ()
    ) -> list[InstanceMatch]:
        client = self._client("qido")
        fields = ["SOPClassUID", *keys]
        # One UID is matched by the server; a list is matched here (list matching varies between servers).
        filters = {"SOPInstanceUID": sop_uids[0]} if len(sop_uids) == 1 else None
        found = self._call(
            "QIDO-RS instance search",
            lambda: client.search_for_instances(study_uid, series_uid, fields=fields, search_filters=filters),
        )
        return instance_matches(study_uid, series_uid, found, _json_value, keys, sop_uids)

    def retrieve(self, instances: Sequence[InstanceMatch], receiver: Receiver) -> RetrieveResult:
        if receiver.store_file is None:
            raise PeerError(
                f"{self.name}: WADO-RS retrieval needs the listener's store_file", Outcome.PERMANENT
            )
        client = self._client("wado")
        completed = failed = 0
        for inst in instances:
            try:
                ds = self._call(
                    "WADO-RS instance retrieval",
                    lambda inst=inst: client.retrieve_instance(  # type: ignore[misc]
                        inst.study_uid, inst.series_uid, inst.sop_uid, media_types=AS_STORED
                    ),
                )
            except PeerUnreachable:
                raise
            except PeerError as exc:
                if exc.transient:
                    raise
                failed += 1
                continue
            try:
                data = _part10(ds)
            except (ValueError, AttributeError, TypeError) as exc:  # no usable file meta from the server
                log.warning("peer.wado.unusable", peer=self.name, error=type(exc).__name__)
                failed += 1
                continue
            status = receiver.store_file(data, self.name)
            if status in SUCCESS_STATUSES and str(ds.get("SOPInstanceUID", "")) == inst.sop_uid:
                completed += 1
            else:
                failed += 1
        return RetrieveResult(completed, failed, 0)

    def store(self, items: Sequence[StoreItem]) -> list[StoreResult]:
        client = self._client("stow")
        results: list[StoreResult] = []
        budget = int(self.settings.stow_batch_mb * 1024 * 1024)
        for group in _groups(items, budget):
            try:
                results += self._store_group(client, group)
            except PeerUnreachable as exc:
                if not results:
                    raise
                results += [StoreResult(it, Outcome.TRANSIENT, None, str(exc)) for it in group]
        # In the caller's order.
        by_uid = {r.item.sop_uid: r for r in results}
        return [by_uid[it.sop_uid] for it in items]

    def _store_group(self, client: DICOMwebClient, group: list[StoreItem]) -> list[StoreResult]:
        datasets = []
        unreadable: list[StoreResult] = []
        for it in group:
            try:
                datasets.append(pydicom.dcmread(it.path))
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                unreadable.append(StoreResult(it, Outcome.PERMANENT, None, f"cannot read file: {exc}"))
        sendable = [it for it in group if it not in {r.item for r in unreadable}]
        if not sendable:
            return unreadable

        def post() -> tuple[pydicom.Dataset | None, int]:
            try:
                return client.store_instances(datasets), 200
            except requests.HTTPError as exc:  # 409: every instance failed, the body says why
                if exc.response is not None and exc.response.status_code == 409:
                    return _body(exc.response), 409
                raise

        try:
            answer, http_status = self._call("STOW-RS", post)
        except PeerUnreachable:
            raise
        except PeerError as exc:  # the server answered (an HTTP error, or a body we cannot read)
            return unreadable + [
                StoreResult(it, exc.outcome, exc.status, str(exc), exc.retry_after_s) for it in sendable
            ]
        return unreadable + _per_instance(sendable, answer, http_status, self.name)


def _body(response: requests.Response) -> pydicom.Dataset | None:
    """The DICOM JSON body of a STOW-RS answer, or None."""
    try:
        return pydicom.Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError):
        return None


def _part10(ds: pydicom.Dataset) -> bytes:
    """The Part 10 bytes of a retrieved dataset, in the transfer syntax the server sent."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _groups(items: Sequence[StoreItem], budget: int) -> Iterator[list[StoreItem]]:
    group: list[StoreItem] = []
    size = 0
    for it in items:
        try:
            n = it.path.stat().st_size
        except OSError:
            n = 0
        if group and size + n > budget:
            yield group
            group, size = [], 0
        group.append(it)
        size += n
    if group:
        yield group


def _per_instance(
    items: list[StoreItem], answer: pydicom.Dataset | None, http_status: int | None, peer: str
) -> list[StoreResult]:
    """One result per item from a STOW-RS answer (``None``: the body was not returned or not readable)."""
    failed: dict[str, int | None] = {}
    stored: set[str] = set()
    if answer is not None:
        for entry in answer.get("FailedSOPSequence", []) or []:
            reason = entry.get("FailureReason")
            failed[str(entry.get("ReferencedSOPInstanceUID", ""))] = (
                int(reason) if reason is not None else None
            )
        for entry in answer.get("ReferencedSOPSequence", []) or []:
            stored.add(str(entry.get("ReferencedSOPInstanceUID", "")))
    out = []
    for it in items:
        if it.sop_uid in failed:
            reason = failed[it.sop_uid]
            detail = f"{peer}: STOW-RS refused the instance (FailureReason " + (
                f"0x{reason:04X})" if reason is not None else "not given)"
            )
            out.append(StoreResult(it, failure_outcome(reason), reason, detail))
        elif it.sop_uid in stored or (http_status == 200 and not failed and not stored):
            out.append(StoreResult(it, Outcome.OK, 0x0000, "stored"))
        elif http_status == 409:
            out.append(
                StoreResult(it, Outcome.PERMANENT, 409, f"{peer}: STOW-RS refused the request (HTTP 409)")
            )
        else:
            out.append(
                StoreResult(
                    it, Outcome.TRANSIENT, http_status, f"{peer}: STOW-RS did not confirm the instance"
                )
            )
    return out
