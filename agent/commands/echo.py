"""``liver-agent echo AE@HOST:PORT`` (or a configured peer name): one C-ECHO, exit 0 on success."""

from __future__ import annotations

import argparse
import re
import ssl
from typing import Any

from pynetdicom import AE

from agent.commands import settings_or_exit

_TARGET = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")
VERIFICATION = "1.2.840.10008.1.1"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "echo", parents=parents, help="send a C-ECHO to AE@HOST:PORT or a configured peer"
    )
    p.add_argument("target", help="AE@HOST:PORT, or the name of a peer in the configuration")
    p.add_argument("--calling-aet", help="our AE title (default: dicom.ae_title)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each step (default 10)")
    p.add_argument("--tls", action="store_true", help="use TLS (with dicom.tls certificate, key and CA)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    m = _TARGET.match(args.target)
    if m:
        called, host, port = m["ae"].strip(), m["host"].strip("[]"), int(m["port"])
    elif args.target in settings.peers:
        peer = settings.peers[args.target]
        called, host, port = peer.ae_title, peer.host, peer.port
    else:
        print(f"liver-agent echo: {args.target!r} is neither AE@HOST:PORT nor a configured peer", flush=True)
        return 2
    if not 1 <= port <= 65535:
        print(f"liver-agent echo: port {port} out of range")
        return 2
    ae = AE(ae_title=args.calling_aet or settings.dicom.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    ae.add_requested_context(VERIFICATION)
    tls_args = None
    if args.tls:
        tls = settings.dicom.tls
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificate)
        ctx.check_hostname = False
        if tls.certificate and tls.private_key:
            ctx.load_cert_chain(str(tls.certificate), str(tls.private_key))
        tls_args = (ctx, "")
    assoc = ae.associate(host, port, ae_title=called, tls_args=tls_args)
    if not assoc.is_established:
        print(f"C-ECHO {called}@{host}:{port}: association failed")
        return 1
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code == 0x0000:
        print(f"C-ECHO {called}@{host}:{port}: success")
        return 0
    print(f"C-ECHO {called}@{host}:{port}: failed" + (f" (status 0x{code:04X})" if code is not None else ""))
    return 1
