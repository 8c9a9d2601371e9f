"""Alerts: the store (``store``: one row per assessment or operational alert, updated on re-runs), the sinks
(``sinks``: webhook, HL7 v2 over MLLP, log; one class each behind a registry) and the durable delivery loop
(``delivery``). May import ``agent.db``, ``agent.sr`` and ``agent.response``, never ``agent.pipeline``.
"""
