"""The DIMSE peer: a PACS reached over the DICOM upper layer (``agent.dicom.scu``).

C-ECHO for :meth:`echo`; Study Root C-FIND at STUDY, SERIES and IMAGE level; C-MOVE to our own AE (the
instances arrive at our listener) or C-GET (they arrive on the same association and go to the listener's
C-STORE handler), per ``peers.<name>.retrieve_method``; C-STORE of our results. The client's errors become
:class:`agent.peers.base.PeerError`: no association, timeout or abort is transient; a failure status is
transient when it means "not now" (out of resources, resource limitation) and permanent otherwise.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Sequence
from datetime import date

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from agent.config import PeerSettings
from agent.dicom import scu
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

_OUTCOMES = {
    scu.Outcome.OK: Outcome.OK,
    scu.Outcome.TRANSIENT: Outcome.TRANSIENT,
    scu.Outcome.PERMANENT: Outcome.PERMANENT,
}


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except scu.TransientError as exc:
        raise PeerUnreachable(str(exc)) from exc
    except scu.StatusError as exc:
        raise PeerError(str(exc), _OUTCOMES[exc.outcome], exc.status) from exc
    except scu.SCUError as exc:
        raise PeerError(str(exc)) from exc


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value or "")


class DimsePeer(Peer):
    kind = "dimse"
    settings: PeerSettings

    def __init__(
        self, name: str, settings: PeerSettings, calling_aet: str, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(name, settings, calling_aet, tls)
        self.client = scu.PeerClient(name, settings, calling_aet, tls)

    def echo(self) -> None:
        with _translated():
            self.client.echo()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with _translated(), self.client.queries():
            yield

    def find_studies(
        self,
        patient_id: str,
        issuer: str | None,
        since: date | None,
        until: date | None,
        modalities: Sequence[str],
    ) -> list[StudyMatch]:
        with _translated():
            found = self.client.find_studies(patient_id, issuer, since, until, modalities)
        return [StudyMatch(m.study_uid, m.study_date, m.modalities, m.description) for m in found]

    def find_series(
        self, study_uid: str, modality: str | None = None, keys: Sequence[str] = ()
    ) -> list[SeriesMatch]:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.Modality = modality or ""
        q.SeriesDescription = ""
        for key in keys:
            setattr(q, key, "")
        with _translated():
            answers = self.client.find(q)
        return series_matches(study_uid, answers, _value, modality, keys)

    def find_instances(
        self, study_uid: str, series_uid: str, keys: Sequence[str] = (), sop_uids: Sequence[str] = ()
    ) -> list[InstanceMatch]:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = (list(sop_uids) if len(sop_uids) > 1 else sop_uids[0]) if sop_uids else ""
        q.SOPClassUID = ""
        for key in keys:
            setattr(q, key, "")
        with _translated():
            answers = self.client.find(q)
        return instance_matches(study_uid, series_uid, answers, _value, keys, sop_uids)

    def retrieve(self, instances: Sequence[InstanceMatch], receiver: Receiver) -> RetrieveResult:
        wanted = [scu.InstanceMatch(i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid) for i in instances]
        with _translated():
            if self.settings.retrieve_method == "get":
                if receiver.handle_store is None:
                    raise PeerError(
                        f"{self.name}: C-GET retrieval needs a C-STORE handler", Outcome.PERMANENT
                    )
                r = self.client.get(wanted, receiver.handle_store)
            else:
                r = self.client.move(wanted, self.settings.move_destination or receiver.ae_title)
        return RetrieveResult(r.completed, r.failed, r.warning)

    def store(self, items: Sequence[StoreItem]) -> list[StoreResult]:
        with _translated():
            results = self.client.store([scu.StoreItem(i.path, i.sop_class_uid, i.sop_uid) for i in items])
        return [
            StoreResult(item, _OUTCOMES[r.outcome], r.status, r.detail)
            for item, r in zip(items, results, strict=True)
        ]
