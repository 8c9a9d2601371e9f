"""``liver-agent echo AE@HOST:PORT`` (or a configured peer name): one C-ECHO, or for a DICOMweb peer one
QIDO-RS study search (limit 1); exit 0 on success."""

from __future__ import annotations

import argparse
import re
import ssl
from typing import Any

from agent.commands import settings_or_exit
from agent.config import DicomwebPeerSettings, PeerCommon, PeerSettings
from agent.peers import PeerError, PeerUnreachable, build_peer

_TARGET = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "echo", parents=parents, help="check a peer answers: C-ECHO to AE@HOST:PORT, or a configured peer"
    )
    p.add_argument("target", help="AE@HOST:PORT, or the name of a peer in the configuration")
    p.add_argument("--calling-aet", help="our AE title (default: dicom.ae_title)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each step (default 10)")
    p.add_argument(
        "--tls", action="store_true", help="DIMSE: use TLS (with dicom.tls certificate, key and CA)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    m = _TARGET.match(args.target)
    if m:
        port = int(m["port"])
        if not 1 <= port <= 65535:
            print(f"liver-agent echo: port {port} out of range")
            return 2
        name = "echo"
        peer: PeerCommon
        try:
            peer = PeerSettings(
                ae_title=m["ae"].strip(),
                host=m["host"].strip("[]"),
                port=port,
                acse_timeout_s=args.timeout,
                dimse_timeout_s=args.timeout,
                network_timeout_s=args.timeout,
            )
        except ValueError:
            print(f"liver-agent echo: {m['ae']!r} is not a valid AE title")
            return 2
    elif args.target in settings.peers:
        name = args.target
        configured = settings.peers[args.target]
        if isinstance(configured, DicomwebPeerSettings):
            peer = configured.model_copy(
                update={"connect_timeout_s": args.timeout, "read_timeout_s": args.timeout}
            )
        else:
            peer = configured.model_copy(
                update={"acse_timeout_s": args.timeout, "dimse_timeout_s": args.timeout}
            )
    else:
        print(f"liver-agent echo: {args.target!r} is neither AE@HOST:PORT nor a configured peer", flush=True)
        return 2
    tls_context = None
    if args.tls:
        tls = settings.dicom.tls
        tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificate)
        tls_context.check_hostname = False
        if tls.certificate and tls.private_key:
            tls_context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if isinstance(peer, DicomwebPeerSettings):
        what, where = "QIDO-RS", peer.service_url("qido")
    else:
        assert isinstance(peer, PeerSettings)
        what, where = "C-ECHO", f"{peer.ae_title}@{peer.host}:{peer.port}"
    try:
        build_peer(name, peer, args.calling_aet or settings.dicom.ae_title, tls_context).echo()
    except PeerUnreachable:
        print(f"{what} {where}: " + ("no answer" if what == "QIDO-RS" else "association failed"))
        return 1
    except PeerError as exc:
        status = ""
        if exc.status is not None:
            status = f" (HTTP {exc.status})" if what == "QIDO-RS" else f" (status 0x{exc.status:04X})"
        print(f"{what} {where}: failed{status}")
        return 1
    print(f"{what} {where}: success")
    return 0
