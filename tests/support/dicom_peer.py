"""A small real DICOM peer for tests: a pynetdicom Storage and Study Root C-FIND SCP on 127.0.0.1.

It answers each C-STORE with the next status of ``statuses`` (then ``0x0000``), records what it received,
and answers C-FIND with nothing (no prior studies). Started and stopped by the test; the port is free.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification


@dataclass
class DicomPeer:
    """The peer; ``start`` binds ``port`` (0: a free one) and returns self."""

    ae_title: str = "TESTPACS"
    port: int = 0
    statuses: list[int] = field(default_factory=list)
    # Final statuses of the next C-FIND requests (none left: success, no match).
    find_statuses: list[int] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    finds: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _on_store(self, event: Any) -> int:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            if status in (0x0000, 0xB000, 0xB007, 0xB006):
                self.received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    def _on_find(self, event: Any) -> Iterator[tuple[int, Any]]:
        with self._lock:
            self.finds += 1
            status = self.find_statuses.pop(0) if self.find_statuses else None
        if status is not None:
            yield status, None

    def start(self) -> DicomPeer:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
