"""Receiver processes count into shared memory; the first process adds their counts to its Prometheus ones."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY

from agent.dicom.counters import SharedCounters
from agent.dicom.scp import accepted_storage_classes


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counts_of_a_forked_receiver_reach_the_first_process_once() -> None:
    shared = SharedCounters(3, accepted_storage_classes().values())
    before = (
        value("liver_agent_instances_received_total", sop_class="CTImageStorage"),
        value("liver_agent_received_bytes_total"),
        value("liver_agent_instances_refused_total", status="0xA900"),
        value("liver_agent_associations_accepted_total"),
    )
    pid = os.fork()
    if pid == 0:  # the receiver process
        try:
            counters = shared.writer(2)
            counters.association_accepted()
            for _ in range(5):
                counters.received("CTImageStorage", 1000)
            counters.refused("0xA900")
            counters.refused("0x0122")  # outside the fixed set: not shared
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    shared.merge()
    shared.merge()  # nothing new: nothing added twice
    after = (
        value("liver_agent_instances_received_total", sop_class="CTImageStorage"),
        value("liver_agent_received_bytes_total"),
        value("liver_agent_instances_refused_total", status="0xA900"),
        value("liver_agent_associations_accepted_total"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [5, 5000, 1, 1]
