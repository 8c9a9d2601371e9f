"""Run the FastAPI app with uvicorn on a background thread inside ``liver-agent serve``."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from agent.log import get_logger

log = get_logger(__name__)


class WebServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout_s: float = 10) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        log.info("web.listening", host=self.host, port=self.port)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        log.info("web.stopped")
