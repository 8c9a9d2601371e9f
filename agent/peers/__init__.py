"""Remote nodes the agent queries, retrieves from and stores to, behind one interface (``base.Peer``)."""

from agent.peers.base import (
    InstanceMatch,
    Outcome,
    Peer,
    PeerConfigError,
    PeerError,
    PeerUnreachable,
    Receiver,
    RetrieveResult,
    SeriesMatch,
    StoreItem,
    StoreResult,
    StudyMatch,
    build_peer,
    peers_for,
)

__all__ = [
    "InstanceMatch",
    "Outcome",
    "Peer",
    "PeerConfigError",
    "PeerError",
    "PeerUnreachable",
    "Receiver",
    "RetrieveResult",
    "SeriesMatch",
    "StoreItem",
    "StoreResult",
    "StudyMatch",
    "build_peer",
    "peers_for",
]
