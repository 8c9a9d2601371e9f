"""A TLS front for an HTTP server on 127.0.0.1 (the way a PACS's DICOMweb service is usually published): it
terminates TLS with the given certificate and relays the bytes to the backend port. Orthanc's own HTTPS is
not used because the packaged build stops at the first TLS handshake."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from support.agentproc import free_port


class TLSProxy:
    def __init__(self, backend_port: int, certificate: Path, key: Path) -> None:
        self.backend_port = backend_port
        self.port = free_port()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(certificate), str(key))
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> TLSProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            secure = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate: nothing to relay
            with contextlib.suppress(OSError):
                client.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        secure.settimeout(30)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        up = threading.Thread(target=pump, args=(secure, backend), daemon=True)
        up.start()
        pump(backend, secure)
        up.join(30)
        for s in (secure, backend):
            with contextlib.suppress(OSError):
                s.close()
