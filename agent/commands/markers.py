"""``liver-agent markers import FILE.csv``: store a batch of tumour marker results (docs/criteria.md §13.2);
``liver-agent markers list PATIENT_ID``: print a patient's stored results."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.markers.csvimport import MarkerImportError, read_csv
from agent.markers.store import load, save

MAX_FILE_BYTES = 256 * 1024 * 1024


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("markers", help="tumour marker results (CSV import, list)")
    sub = p.add_subparsers(dest="markers_command", metavar="ACTION", required=True)
    imp = sub.add_parser(
        "import",
        parents=parents,
        help="import a CSV file (columns patient_id, issuer, marker, date, value, unit, lower_limit, "
        "upper_limit); all rows or none",
    )
    imp.add_argument("file", help="the CSV file ('-' for standard input)")
    imp.set_defaults(func=run)
    ls = sub.add_parser("list", parents=parents, help="print the stored results of a patient")
    ls.add_argument("patient_id")
    ls.add_argument("--issuer", default="")
    ls.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        if args.markers_command == "list":
            with sessions() as session:
                for r in load(session, args.patient_id, args.issuer):
                    low = r.lower_limit if r.lower_limit is not None else ""
                    limits = f" [{low}-{r.upper_limit}]" if r.upper_limit is not None else ""
                    print(f"{r.date} {r.marker.value} {r.value} {r.unit}{limits}")
            return 0
        try:
            if args.file == "-":
                items = read_csv(sys.stdin)
            else:
                with open(args.file, encoding="utf-8-sig", newline="") as fh:
                    if fh.seek(0, 2) > MAX_FILE_BYTES:
                        print(f"liver-agent markers import: {args.file}: larger than {MAX_FILE_BYTES} bytes")
                        return 1
                    fh.seek(0)
                    items = read_csv(fh)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"liver-agent markers import: {args.file}: {exc}")
            return 1
        except MarkerImportError as exc:
            print(f"liver-agent markers import: {args.file}: {exc}; nothing imported")
            return 1
        with sessions() as session:
            n = save(session, items)
            session.commit()
        patients = len({(i.patient_id, i.issuer) for i in items})
        print(f"imported {n} result(s) for {patients} patient(s)")
        return 0
    finally:
        engine.dispose()
