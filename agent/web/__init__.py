"""The HTTP service (FastAPI): health, metrics, the alerts and response API and the worklist pages.

May import ``agent.pipeline`` and below; never imported by them. ``server.WebServer`` runs it with uvicorn
inside ``liver-agent serve``.
"""
