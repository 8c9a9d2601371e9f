"""The acquisition context of every measured image, current and prior: local index, then what was learned,
then the PACS.

Each measurement group references the image it was drawn on. What the assessment needs to know about that
image (modality, contrast phase inputs: series description, Contrast/Bolus Agent and the contrast delay;
slice thickness, kVp, pixel spacing) and, for a group that gives diameters without attenuation, the image's
pixels (``agent.sr.density``) come from, in this order:

1. **index**: the instance (or, failing that, its series) is in our spool: its own header answers.
2. **learned**: an earlier query or retrieval about it, kept in the ``acquisition_context`` table (so a prior
   is asked about once).
3. **query**: on each query/retrieve peer, C-FIND at SERIES level (Modality, Series Description,
   Contrast/Bolus Agent and Route, Body Part) and IMAGE level for the referenced instances only (Slice
   Thickness, Pixel Spacing, KVP, Contrast/Bolus Start Time, Acquisition Time); the answer is kept.
4. **retrieved**: where the query left something out (the phase stays undecided, no slice thickness or pixel
   spacing) or the pixels are needed, only the referenced instances are retrieved (never the whole prior
   study). They arrive at our listener as retrieved priors (``origin`` retrieved: filed, indexed, never
   reopening their study) and from then on the index answers.

What no source can tell stays unknown, and the lesion says why (``agent.sr.context.image_context``);
:func:`resolve` also returns a warning per image the PACS could not describe. Nothing here logs patient data.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.config import Settings
from agent.db.models import AcquisitionContext, Instance, InstanceOrigin, Series, Study, utcnow
from agent.log import get_logger, uid_hash
from agent.peers import InstanceMatch, Peer, PeerError, Receiver, build_peer
from agent.pipeline.assemble import reader_settings
from agent.sr.context import SeriesInfo, merge, normalise_phase, series_info
from agent.sr.density import Density, DensityError, Outline, measure, outline
from agent.sr.read import (
    MeasurementKind,
    ReportCache,
    SRReadError,
    SRReport,
    is_lesion_group,
    read_sr,
)
from agent.sr.values import parse_da

log = get_logger(__name__)

# Return keys of the context queries (Study Root C-FIND).
SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "BodyPartExamined",
)
IMAGE_KEYS = (
    "SliceThickness",
    "PixelSpacing",
    "KVP",
    "ContrastBolusAgent",
    "ContrastBolusStartTime",
    "AcquisitionTime",
    "ContentTime",
)
_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "Modality",
    "SeriesDescription",
    "SliceThickness",
    "KVP",
    "PixelSpacing",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "ContrastBolusStartTime",
    "AcquisitionTime",
    "ContentTime",
]
_COLUMNS = (
    "study_uid",
    "study_date",
    "modality",
    "series_description",
    "contrast_agent",
    "contrast_route",
    "slice_thickness",
    "kvp",
    "pixel_spacing",
    "contrast_delay_s",
)


def _s(value: object, limit: int) -> str | None:
    return str(value)[:limit] if value is not None else None


def _row_values(info: SeriesInfo) -> dict[str, str | None]:
    spacing = info.pixel_spacing_mm
    return {
        "study_uid": info.study_uid,
        "study_date": info.study_date.strftime("%Y%m%d") if info.study_date else None,
        "modality": _s(info.modality, 16),
        "series_description": _s(info.series_description, 64),
        "contrast_agent": _s(info.contrast_agent, 64),
        "contrast_route": _s(info.contrast_route, 64),
        "slice_thickness": _s(info.slice_thickness_mm, 16),
        "kvp": _s(info.kvp, 16),
        "pixel_spacing": f"{spacing[0]}\\{spacing[1]}" if spacing else None,
        "contrast_delay_s": _s(info.contrast_delay_s, 16),
    }


def _dec(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except ArithmeticError:
        return None


def _info_of_row(row: AcquisitionContext, series_uid: str) -> SeriesInfo:
    spacing = (row.pixel_spacing or "").split("\\")
    pair = (_dec(spacing[0]), _dec(spacing[1])) if len(spacing) == 2 else (None, None)
    return SeriesInfo(
        study_uid=row.study_uid,
        series_uid=series_uid,
        study_date=parse_da(row.study_date),
        modality=row.modality,
        slice_thickness_mm=_dec(row.slice_thickness),
        series_description=row.series_description,
        contrast_agent=row.contrast_agent,
        contrast_route=row.contrast_route,
        kvp=_dec(row.kvp),
        pixel_spacing_mm=(pair[0], pair[1]) if pair[0] is not None and pair[1] is not None else None,
        contrast_delay_s=_dec(row.contrast_delay_s),
        source=row.source,
    )


class AcquisitionIndex:
    """The SR reader's series lookup (``agent.sr.context.SeriesLookup``) over the local index and what was
    learned from the PACS, and measures on the images it holds (``agent.sr.density.PixelSource``).

    Answers are cached for the object's lifetime (one pipeline run); :meth:`forget` drops them after a
    retrieval brought new instances.
    """

    def __init__(self, sessions: sessionmaker[Session], spool_root: Path, *, density: bool = True) -> None:
        self.sessions = sessions
        self.spool_root = spool_root
        self.density = density
        self._cache: dict[tuple[str | None, str | None], SeriesInfo | None] = {}
        self._paths: dict[str, Path | None] = {}
        self._series: dict[str, tuple[Path, str, str | None] | None] = {}
        self.pixel_s = 0.0  # time spent reading and measuring pixels
        self.pixel_reads = 0

    def forget(self) -> None:
        self._cache.clear()
        self._paths.clear()
        self._series.clear()

    # -- the local index ---------------------------------------------------------------------------------

    def _local_instance(self, sop_uid: str) -> tuple[Path, str, str | None] | None:
        """(file, origin, study date) of a spooled instance."""
        with self.sessions() as session:
            row = session.execute(
                select(Instance.path, Instance.origin, Study.study_date)
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(Instance.sop_uid == sop_uid)
            ).first()
        return (self.spool_root / row[0], row[1], row[2]) if row is not None else None

    def _local_series(self, series_uid: str) -> tuple[Path, str, str | None] | None:
        if series_uid in self._series:
            return self._series[series_uid]
        with self.sessions() as session:
            row = session.execute(
                select(Instance.path, Instance.origin, Study.study_date)
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(Series.series_uid == series_uid)
                .order_by(Instance.id)
                .limit(1)
            ).first()
        found = (self.spool_root / row[0], row[1], row[2]) if row is not None else None
        self._series[series_uid] = found
        return found

    def _from_file(self, found: tuple[Path, str, str | None]) -> SeriesInfo | None:
        path, origin, study_date = found
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # a file gone or unreadable: the index cannot answer for it
            return None
        source = "retrieved" if origin == InstanceOrigin.RETRIEVED.value else "index"
        info = series_info(ds, source)
        if info.study_date is None and study_date:
            info = merge(info, SeriesInfo(study_date=parse_da(study_date)))
        return info

    def _learned(self, series_uid: str | None, sop_uid: str | None) -> SeriesInfo | None:
        with self.sessions() as session:
            rows: list[AcquisitionContext] = []
            if sop_uid:
                rows += (
                    session.execute(select(AcquisitionContext).where(AcquisitionContext.sop_uid == sop_uid))
                    .scalars()
                    .all()
                )
            series = series_uid or (rows[0].series_uid if rows else None)
            if series:
                rows += (
                    session.execute(
                        select(AcquisitionContext).where(
                            AcquisitionContext.series_uid == series, AcquisitionContext.sop_uid == ""
                        )
                    )
                    .scalars()
                    .all()
                )
            infos = [_info_of_row(r, r.series_uid) for r in rows]
        if not infos:
            return None
        out = infos[0]
        for other in infos[1:]:
            out = merge(out, other)
        return out

    def __call__(
        self, study_uid: str | None, series_uid: str | None, sop_uid: str | None
    ) -> SeriesInfo | None:
        key = (series_uid, sop_uid)
        if key in self._cache:
            return self._cache[key]
        info: SeriesInfo | None = None
        not_held = sop_uid in self._paths and self._paths[sop_uid or ""] is None
        if sop_uid and not not_held and (found := self._local_instance(sop_uid)) is not None:
            info = self._from_file(found)
        if info is None and series_uid and (found := self._local_series(series_uid)) is not None:
            info = self._from_file(found)
            if info is not None and sop_uid:  # the series is here, the image itself maybe learned
                info = merge(info, self._learned(None, sop_uid))
        if info is None:
            info = self._learned(series_uid, sop_uid)
        self._cache[key] = info
        return info

    def held(self, sop_uid: str) -> bool:
        """Whether the image is in our spool."""
        if sop_uid not in self._paths:
            found = self._local_instance(sop_uid)
            self._paths[sop_uid] = found[0] if found is not None else None
        return self._paths[sop_uid] is not None

    def image_path(self, sop_uid: str) -> Path | None:
        """The spooled file of a measured image (None when we do not hold it or density is off)."""
        return self._paths[sop_uid] if self.density and self.held(sop_uid) else None

    def measure_density(self, where: Outline) -> Density:
        """Mean HU on a held image (``agent.sr.density.PixelSource``); the time spent is in ``pixel_s``."""
        path = self.image_path(where.sop_instance_uid)
        if path is None:
            raise DensityError("the image is not held here" if self.density else "density from images is off")
        t0 = time.perf_counter()
        try:
            return measure(path, where)
        finally:
            self.pixel_s += time.perf_counter() - t0
            self.pixel_reads += 1

    # -- learning ----------------------------------------------------------------------------------------

    def learn(self, answers: Sequence[tuple[str, str, SeriesInfo]], peer: str | None) -> None:
        """Keep what a peer said about series (``sop_uid`` empty) and instances, in one transaction."""
        if not answers:
            return
        with self.sessions.begin() as session:
            for series_uid, sop_uid, info in answers:
                row = session.execute(
                    select(AcquisitionContext).where(
                        AcquisitionContext.series_uid == series_uid, AcquisitionContext.sop_uid == sop_uid
                    )
                ).scalar_one_or_none()
                if row is None:
                    row = AcquisitionContext(series_uid=series_uid, sop_uid=sop_uid)
                    session.add(row)
                for column, value in _row_values(info).items():
                    if value is not None or getattr(row, column, None) is None:
                        setattr(row, column, value)
                row.source = info.source or "query"
                row.peer = peer
                row.learned_at = utcnow()
        series = {a[0] for a in answers}
        sops = {a[1] for a in answers if a[1]}
        for key in [k for k in self._cache if k[0] in series or k[1] in sops]:
            del self._cache[key]

    def prefetch(self, sop_uids: Sequence[str]) -> None:
        """Which of these images we hold, in one query (instead of one per image)."""
        wanted = [u for u in dict.fromkeys(sop_uids) if u not in self._paths]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            with self.sessions() as session:
                rows = session.execute(
                    select(Instance.sop_uid, Instance.path).where(Instance.sop_uid.in_(chunk))
                ).all()
            found = {sop: self.spool_root / path for sop, path in rows}
            for sop in chunk:
                self._paths[sop] = found.get(sop)


# --------------------------------------------------------------------------------------------------------
# Asking the PACS


@dataclass(frozen=True, slots=True)
class MeasuredImage:
    study_uid: str | None
    series_uid: str | None
    sop_uid: str
    sop_class_uid: str | None
    pixels: bool  # a group needs its pixels (diameters without attenuation, an outline on this image)


@dataclass
class Resolution:
    """What :func:`resolve` did: counts, seconds, and warnings for the result and the worklist."""

    images: int = 0
    local: int = 0
    learned: int = 0
    queried: int = 0
    retrieved: int = 0
    query_s: float = 0.0
    retrieve_s: float = 0.0
    read_s: float = 0.0  # reading the SRs (once: the reader's cache keeps them for the assessment)
    local_s: float = 0.0  # the index and what was learned
    warnings: list[str] = field(default_factory=list)


def measured_images(reports: Iterable[SRReport], density: bool) -> list[MeasuredImage]:
    """The images the lesion groups of ``reports`` were measured on (with their study and series)."""
    out: dict[str, MeasuredImage] = {}
    for report in reports:
        for group in report.groups:
            if not is_lesion_group(group):
                continue
            where = outline(group) if density and group.first(MeasurementKind.MEAN_HU) is None else None
            sops = [img for img in group.images]
            sops += [r.image for r in group.regions if r.image is not None]
            sops += [m.region.image for m in group.measurements if m.region is not None and m.region.image]
            for img in sops:
                ev = report.evidence_of(img.sop_instance_uid)
                pixels = where is not None and where.sop_instance_uid == img.sop_instance_uid
                known = out.get(img.sop_instance_uid)
                out[img.sop_instance_uid] = MeasuredImage(
                    study_uid=(ev.study_uid if ev else None) or report.study_uid,
                    series_uid=ev.series_uid if ev else None,
                    sop_uid=img.sop_instance_uid,
                    sop_class_uid=img.sop_class_uid or (ev.sop_class_uid if ev else None),
                    pixels=pixels or (known.pixels if known else False),
                )
    return list(out.values())


def complete(info: SeriesInfo | None, rules: Sequence[Any]) -> bool:
    """Enough to assess: modality, slice thickness, pixel spacing and, for CT/MR, a decided contrast phase."""
    if info is None or info.modality is None:
        return False
    if info.slice_thickness_mm is None or info.pixel_spacing_mm is None:
        return False
    if info.modality in ("CT", "MR"):
        phase, contrast = normalise_phase(
            info.series_description, info.contrast_agent, rules, info.contrast_delay_s
        )
        return phase is not None or contrast is False
    return True


def _attributes_info(attributes: dict[str, str], source: str) -> SeriesInfo:
    ds = pydicom.Dataset()
    for keyword, value in attributes.items():
        if value:
            try:
                setattr(ds, keyword, value.split("\\") if keyword == "PixelSpacing" else value)
            except (TypeError, ValueError):
                continue
    return series_info(ds, source)


def _query(peer: Peer, index: AcquisitionIndex, study_uid: str, series_uid: str, sops: Sequence[str]) -> None:
    """C-FIND the series and the referenced instances; keep the answers."""
    answers: list[tuple[str, str, SeriesInfo]] = []
    found = peer.find_series(study_uid, None, SERIES_KEYS)
    series = next((s for s in found if s.series_uid == series_uid), None)
    if series is not None:
        attrs = dict(series.attributes)
        attrs.setdefault("Modality", series.modality or "")
        attrs.setdefault("SeriesDescription", series.description or "")
        info = merge(_attributes_info(attrs, "query"), SeriesInfo(study_uid=study_uid, series_uid=series_uid))
        answers.append((series_uid, "", info))
    for inst in peer.find_instances(study_uid, series_uid, IMAGE_KEYS, sops):
        if inst.sop_uid in sops:
            info = merge(_attributes_info(inst.attributes, "query"), SeriesInfo(study_uid=study_uid))
            answers.append((series_uid, inst.sop_uid, info))
    index.learn(answers, peer.name)


def _ask(
    peer: Peer,
    index: AcquisitionIndex,
    by_series: dict[tuple[str, str], list[MeasuredImage]],
    remaining: Sequence[MeasuredImage],
    receiver: Receiver,
    rules: Sequence[Any],
    out: Resolution,
) -> None:
    """Query one peer about the images still unknown, and retrieve those the answers leave incomplete."""
    t0 = time.perf_counter()
    with peer.session():
        for (study_uid, series_uid), images in by_series.items():
            todo = [i for i in images if i in remaining]
            if todo:
                _query(peer, index, study_uid, series_uid, [i.sop_uid for i in todo])
                out.queried += len(todo)
    out.query_s += time.perf_counter() - t0
    fetch: list[InstanceMatch] = []
    for image in remaining:
        info = index(image.study_uid, image.series_uid, image.sop_uid)
        if image.pixels or not complete(info, rules):
            assert image.study_uid is not None and image.series_uid is not None
            fetch.append(InstanceMatch(image.study_uid, image.series_uid, image.sop_uid, image.sop_class_uid))
    if fetch:
        t0 = time.perf_counter()
        result = peer.retrieve(fetch, receiver)
        out.retrieve_s += time.perf_counter() - t0
        out.retrieved += result.completed
        index.forget()
        index.prefetch([i.sop_uid for i in remaining])
        if result.failed:
            out.warnings.append(f"{peer.name}: {result.failed} measured image(s) could not be retrieved")


def resolve(
    index: AcquisitionIndex,
    reports: Iterable[SRReport],
    settings: Settings,
    receiver: Receiver,
    rules: Sequence[Any],
    peers: Sequence[Peer] | None = None,
) -> Resolution:
    """Make every measured image's acquisition context known to ``index``, asking the PACS where needed.

    Raises :class:`agent.peers.PeerError` when a peer cannot be queried or retrieval fails (the caller
    retries later, as for the priors themselves).
    """
    out = Resolution()
    t0 = time.perf_counter()
    wanted: list[MeasuredImage] = []
    measured = measured_images(reports, index.density)
    index.prefetch([m.sop_uid for m in measured])
    for image in measured:
        out.images += 1
        if index.held(image.sop_uid):
            out.local += 1
            continue
        info = index(image.study_uid, image.series_uid, image.sop_uid)
        if complete(info, rules) and not image.pixels:
            out.learned += 1
            continue
        if any(uid and len(uid) > 64 for uid in (image.study_uid, image.series_uid, image.sop_uid)):
            out.warnings.append(
                f"image {uid_hash(image.sop_uid)}: a UID longer than 64 characters; not asked"
            )
            continue
        if image.series_uid is None or image.study_uid is None:
            out.warnings.append(
                f"image {uid_hash(image.sop_uid)}: its series is not in the SR's evidence; its acquisition "
                "context was not asked of the PACS"
            )
            continue
        wanted.append(image)
    out.local_s = time.perf_counter() - t0
    if not wanted:
        return out
    if peers is None:
        peers = [
            build_peer(name, p, settings.dicom.ae_title)
            for name, p in settings.peers.items()
            if p.query_retrieve
        ]
    if not peers:
        out.warnings.append(f"{len(wanted)} measured image(s) not held and no query/retrieve peer configured")
        return out
    by_series: dict[tuple[str, str], list[MeasuredImage]] = {}
    for image in wanted:
        assert image.study_uid is not None and image.series_uid is not None
        by_series.setdefault((image.study_uid, image.series_uid), []).append(image)
    remaining = list(wanted)
    for peer in peers:
        try:
            _ask(peer, index, by_series, remaining, receiver, rules, out)
        except PeerError as exc:
            if exc.transient:
                raise  # the PACS is away or busy: the job is retried later, as for the priors
            # It refuses for good: what it cannot tell stays unknown, and the result says so.
            out.warnings.append(f"{peer.name}: acquisition context not available ({str(exc)[:120]})")
            log.warning("acquisition.refused", peer=peer.name, detail=str(exc)[:200])
        remaining = [
            i
            for i in remaining
            if not index.held(i.sop_uid)
            and (i.pixels or not complete(index(i.study_uid, i.series_uid, i.sop_uid), rules))
        ]
        log.info(
            "acquisition.resolved",
            peer=peer.name,
            queried=len(wanted),
            retrieved=out.retrieved,
            unknown=len(remaining),
            query_ms=round(out.query_s * 1000, 1),
            retrieve_ms=round(out.retrieve_s * 1000, 1),
        )
        if not remaining:
            break
    for image in remaining:
        info = index(image.study_uid, image.series_uid, image.sop_uid)
        missing = [
            name
            for name, value in (
                ("modality", info.modality if info else None),
                ("slice thickness", info.slice_thickness_mm if info else None),
                ("pixel spacing", info.pixel_spacing_mm if info else None),
            )
            if value is None
        ]
        if info is not None and info.modality in ("CT", "MR"):
            phase, contrast = normalise_phase(
                info.series_description, info.contrast_agent, rules, info.contrast_delay_s
            )
            if phase is None and contrast is not False:
                missing.append("contrast phase")
        out.warnings.append(
            f"measured image {uid_hash(image.sop_uid)}: "
            + (
                f"the PACS could not tell its {', '.join(missing)}"
                if missing
                else "its pixels were not retrieved"
            )
        )
    return out


def resolve_reports(
    index: AcquisitionIndex,
    paths: Iterable[Path],
    settings: Settings,
    receiver: Receiver,
    cache: ReportCache | None = None,
) -> Resolution:
    """:func:`resolve` for the measurement SR files at ``paths`` (unreadable ones are left to the reader,
    which reports them; with the worker's ``cache`` each file is parsed once for both)."""
    rules, limits = reader_settings(settings.sr)
    reports: list[SRReport] = []
    t0 = time.perf_counter()
    for path in paths:
        try:
            reports.append(read_sr(path, limits=limits, cache=cache))
        except SRReadError:
            continue
    read_s = time.perf_counter() - t0
    out = resolve(index, reports, settings, receiver, rules)
    out.read_s = read_s
    return out
