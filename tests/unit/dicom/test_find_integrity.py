"""Several C-FINDs over one association return complete answers or raise; nothing is silently lost.

The peer is a real pynetdicom C-FIND SCP started here. Its handler can send, besides its ordinary
answers, C-FIND responses of its own making: a response that the client's association reactor takes off the
queue between two requests (what pynetdicom's pause race does to a response under CPU load: it logs
"Received unexpected C-FIND service message" and drops it), a late response to an earlier request, or a
pause past the DIMSE timeout between two matches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from agent.config import PeerSettings
from agent.dicom.scu import PeerClient, TransientError

Handler = Callable[[Any, int], Iterator[tuple[int, Dataset | None]]]


def _match(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def _send_response(event: Any, msg_id: int, status: int, identifier: Dataset | None) -> None:
    """A C-FIND-RSP answering ``msg_id``, sent outside the handler's own answers."""
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    rsp.Status = status
    if identifier is not None:
        rsp.Identifier = BytesIO(encode(identifier, True, True))
    event.assoc.dimse.send_msg(rsp, event.context.context_id)


class FindPeer:
    """A Study Root C-FIND SCP on a free port of 127.0.0.1; ``handler(event, n)`` answers the n-th C-FIND."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.message_ids: list[int] = []
        ae = AE(ae_title="FINDSCP")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)]
        )
        self.port = int(self._server.server_address[1])

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.message_ids.append(int(event.request.MessageID))
        yield from self.handler(event, len(self.message_ids))

    def client(self, dimse_timeout_s: float = 30) -> PeerClient:
        settings = PeerSettings(
            ae_title="FINDSCP", host="127.0.0.1", port=self.port, dimse_timeout_s=dimse_timeout_s
        )
        return PeerClient("pacs", settings, "LIVERAGENT")

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], FindPeer]]:
    peers: list[FindPeer] = []

    def start(handler: Handler) -> FindPeer:
        peers.append(FindPeer(handler))
        return peers[-1]

    yield start
    for peer in peers:
        peer.stop()


def _query() -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = "P1"
    q.StudyInstanceUID = ""
    return q


def test_finds_over_one_association_each_get_their_own_message_id_and_all_matches(serve) -> None:
    def handler(event: Any, n: int) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(n):
            yield 0xFF00, _match(f"1.2.3.{n}.{i}")

    peer = serve(handler)
    client = peer.client()
    with client.queries():
        answers = [[str(ds.StudyInstanceUID) for ds in client.find(_query())] for _ in range(3)]
    assert answers == [["1.2.3.1.0"], ["1.2.3.2.0", "1.2.3.2.1"], ["1.2.3.3.0", "1.2.3.3.1", "1.2.3.3.2"]]
    assert len(set(peer.message_ids)) == 3


def test_a_response_taken_by_the_association_reactor_fails_the_search_loudly(
    serve, caplog: pytest.LogCaptureFixture
) -> None:
    """The second C-FIND's match arrives while pynetdicom's reactor, not the C-FIND, reads the queue.

    The reactor logs "Received unexpected C-FIND service message" and drops it; the C-FIND then sees only
    the success status. Before, the search returned no match (a prior SR silently missed).
    """
    sent = threading.Event()

    def handler(event: Any, n: int) -> Iterator[tuple[int, Dataset | None]]:
        if n == 1:
            yield 0xFF00, _match("1.2.3.1")
            # Once the first C-FIND is over, its association carries the next request's match early.
            msg_id = int(event.request.MessageID)

            def later() -> None:
                time.sleep(0.2)
                _send_response(event, msg_id % 0xFFFF + 1, 0xFF00, _match("1.2.3.2"))
                sent.set()

            threading.Thread(target=later, daemon=True).start()
        # n == 2: the match was sent already; only the success status is left.

    peer = serve(handler)
    client = peer.client()
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    with pytest.raises(TransientError, match="lost or mismatched"), client.queries():
        assert [str(ds.StudyInstanceUID) for ds in client.find(_query())] == ["1.2.3.1"]
        assert sent.wait(10)
        deadline = time.monotonic() + 10
        while not any("unexpected C-FIND" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the association reactor never read the response"
            time.sleep(0.01)
        client.find(_query())


def test_a_late_response_to_an_earlier_request_is_not_taken_as_a_match(serve) -> None:
    def handler(event: Any, n: int) -> Iterator[tuple[int, Dataset | None]]:
        if n == 1:
            yield 0xFF00, _match("1.2.3.1")
            return
        # A stale answer to the first request, then the true answer to this one.
        _send_response(event, peer.message_ids[0], 0xFF00, _match("1.2.3.1"))
        yield 0xFF00, _match("1.2.3.2")

    peer = serve(handler)
    client = peer.client()
    with pytest.raises(TransientError, match="lost or mismatched"), client.queries():
        client.find(_query())
        client.find(_query())


def test_a_dimse_timeout_mid_stream_aborts_the_association_and_later_finds_fail(serve) -> None:
    def handler(event: Any, n: int) -> Iterator[tuple[int, Dataset | None]]:
        yield 0xFF00, _match(f"1.2.3.{n}")
        if n == 1:
            time.sleep(2.0)  # past the client's DIMSE timeout; the rest arrives late
            yield 0xFF00, _match("1.2.3.1.late")

    peer = serve(handler)
    client = peer.client(dimse_timeout_s=0.5)
    with client.queries():
        with pytest.raises(TransientError):
            client.find(_query())
        with pytest.raises(TransientError, match="association lost"):
            client.find(_query())
    assert peer.message_ids == [peer.message_ids[0]]
