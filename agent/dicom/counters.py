"""The listener's counters (instances stored and refused, bytes, associations), across receiver processes.

In one process the listener increments the Prometheus counters of :mod:`agent.metrics` directly. When
``serve`` runs several receiver processes, each receiver counts into its own region of a shared anonymous
memory map created before the fork, and the first process (the one serving ``/metrics``) adds what every
receiver counted since its last look to its own Prometheus counters (:meth:`SharedCounters.merge`, called
every few tenths of a second and at stop). Every label value is known in advance: the storage classes the
SCP accepts and the failure statuses it answers.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterable

from agent.metrics import (
    ASSOCIATION_REJECTS,
    ASSOCIATIONS_ACCEPTED,
    BYTES_RECEIVED,
    INSTANCES_RECEIVED,
    INSTANCES_REFUSED,
)

# Failure statuses the SCP answers (agent.dicom.scp), as the label values of INSTANCES_REFUSED.
REFUSAL_STATUSES = ("0xA700", "0xA900", "0xC000")


class ReceiveCounters:
    """Counts into this process's Prometheus counters."""

    def received(self, sop_class: str, size: int) -> None:
        INSTANCES_RECEIVED.labels(sop_class=sop_class).inc()
        BYTES_RECEIVED.inc(size)

    def refused(self, status: str) -> None:
        INSTANCES_REFUSED.labels(status=status).inc()

    def association_accepted(self) -> None:
        ASSOCIATIONS_ACCEPTED.inc()

    def association_rejected(self) -> None:
        ASSOCIATION_REJECTS.inc()


class SharedCounters:
    """One region of 64-bit counters per receiver process in shared memory (create before forking)."""

    def __init__(self, processes: int, sop_classes: Iterable[str]) -> None:
        keys = [("received", name) for name in sop_classes]
        keys += [("refused", status) for status in REFUSAL_STATUSES]
        keys += [("bytes", ""), ("accepted", ""), ("rejected", "")]
        self.keys = keys
        self._index = {key: i for i, key in enumerate(keys)}
        self._width = len(keys)
        self._processes = processes
        self._map = mmap.mmap(-1, 8 * processes * self._width)
        self._values = memoryview(self._map).cast("q")
        self._seen = [0] * (processes * self._width)

    def writer(self, process: int) -> SharedReceiveCounters:
        """The counters of receiver ``process`` (1 .. processes - 1; 0 is the first process's own)."""
        if not 0 < process < self._processes:
            raise ValueError("receiver process index out of range")
        return SharedReceiveCounters(self, process * self._width)

    def merge(self) -> None:
        """Add to this process's Prometheus counters what the receivers counted since the last merge."""
        values, seen = self._values, self._seen
        for process in range(1, self._processes):
            base = process * self._width
            for i, (kind, label) in enumerate(self.keys):
                value = values[base + i]
                delta = value - seen[base + i]
                if not delta:
                    continue
                seen[base + i] = value
                if kind == "received":
                    INSTANCES_RECEIVED.labels(sop_class=label).inc(delta)
                elif kind == "refused":
                    INSTANCES_REFUSED.labels(status=label).inc(delta)
                elif kind == "bytes":
                    BYTES_RECEIVED.inc(delta)
                elif kind == "accepted":
                    ASSOCIATIONS_ACCEPTED.inc(delta)
                else:
                    ASSOCIATION_REJECTS.inc(delta)


class SharedReceiveCounters(ReceiveCounters):
    """Counts into a receiver process's region of :class:`SharedCounters` (read by the first process)."""

    def __init__(self, shared: SharedCounters, base: int) -> None:
        self._shared = shared
        self._base = base
        self._lock = threading.Lock()  # one writer process, several association threads

    def _add(self, kind: str, label: str, n: int) -> None:
        i = self._shared._index.get((kind, label))
        if i is None:  # a label value outside the fixed set: counted by this process only
            return
        with self._lock:
            self._shared._values[self._base + i] += n

    def received(self, sop_class: str, size: int) -> None:
        self._add("received", sop_class, 1)
        self._add("bytes", "", size)

    def refused(self, status: str) -> None:
        self._add("refused", status, 1)

    def association_accepted(self) -> None:
        self._add("accepted", "", 1)

    def association_rejected(self) -> None:
        self._add("rejected", "", 1)
