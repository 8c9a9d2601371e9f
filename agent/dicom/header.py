"""Read the identifying attributes of a received dataset from its bytes, and prove the bytes are complete.

The C-STORE hot path never decodes a whole dataset: it walks the element headers of the encoded bytes (as
received, in the negotiated transfer syntax), keeps the few top-level values the index needs and checks that
every element, sequence and item ends inside the buffer. A dataset cut short anywhere (pixel data included)
raises ``HeaderError``. Only little-endian transfer syntaxes (implicit, explicit, deflated, encapsulated)
are handled, which is everything the SCP accepts. A deflated dataset is never inflated whole: its elements are
walked up to the last attribute wanted, within a bounded inflated prefix (``PrefixTooLong`` beyond it), and
the rest of the stream is inflated piece by piece only to prove that it reaches its final block.

An identifying attribute encoded (explicit VR) with a VR other than the one the data dictionary gives raises
``WrongVR``: a Patient ID sent as OB or a SOP Instance UID as OB is not the attribute the index expects.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Explicit VRs whose header has two reserved bytes and a 32-bit length.
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
MAX_DEPTH = 64

_TAG_LEN = struct.Struct("<HHI")
_TAG_VR_LEN16 = struct.Struct("<HH2sH")
_LEN32 = struct.Struct("<I")

SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_DATE = 0x00080020
STUDY_TIME = 0x00080030
ACCESSION_NUMBER = 0x00080050
MODALITY = 0x00080060
STUDY_DESCRIPTION = 0x00081030
SERIES_DESCRIPTION = 0x0008103E
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_BIRTH_DATE = 0x00100030
BODY_PART_EXAMINED = 0x00180015
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SERIES_NUMBER = 0x00200011
INSTANCE_NUMBER = 0x00200013

WANTED = frozenset(
    {
        SPECIFIC_CHARACTER_SET,
        SOP_CLASS_UID,
        SOP_INSTANCE_UID,
        STUDY_DATE,
        STUDY_TIME,
        ACCESSION_NUMBER,
        MODALITY,
        STUDY_DESCRIPTION,
        SERIES_DESCRIPTION,
        PATIENT_NAME,
        PATIENT_ID,
        ISSUER_OF_PATIENT_ID,
        PATIENT_BIRTH_DATE,
        BODY_PART_EXAMINED,
        STUDY_INSTANCE_UID,
        SERIES_INSTANCE_UID,
        SERIES_NUMBER,
        INSTANCE_NUMBER,
    }
)
# Values that may be in a character set other than ASCII.
_TEXT = frozenset(
    {PATIENT_NAME, PATIENT_ID, ISSUER_OF_PATIENT_ID, STUDY_DESCRIPTION, SERIES_DESCRIPTION, ACCESSION_NUMBER}
)


# The VR each identifying attribute must have when the VR is explicit (the data dictionary's).
EXPECTED_VR = {tag: dictionary_VR(tag).encode("ascii") for tag in WANTED}

# Person Name component and group delimiters ("^", "="), as the byte values pydicom expects.
_PN_DELIMITERS = {0x5E, 0x3D}


class HeaderError(ValueError):
    """The bytes are not a complete little-endian DICOM dataset."""


class WrongVR(HeaderError):
    """An identifying attribute is encoded with a VR other than the data dictionary's."""


class PrefixTooLong(HeaderError):
    """The identifying attributes of a deflated dataset are not within the bounded inflated prefix."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The attributes the index keeps for one instance (strings stripped; ``None`` when absent or empty)."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None
    series_uid: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    modality: str | None
    series_number: str | None
    series_description: str | None
    body_part: str | None
    instance_number: str | None


# Default bound of the inflated prefix of a deflated dataset read for its identifying attributes.
DEFLATED_PREFIX_MAX = 4 << 20


def read_identity(
    data: bytes | bytearray | memoryview, transfer_syntax: str, deflated_prefix_max: int = DEFLATED_PREFIX_MAX
) -> Identity:
    """Walk ``data`` (a dataset without file meta, as sent) and return its identifying attributes.

    A deflated dataset is inflated no further than ``deflated_prefix_max`` bytes to find them.
    """
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE:
        return _deflated_identity(memoryview(data), deflated_prefix_max)
    values: dict[int, bytes] = {}
    buf = memoryview(data)
    end = _walk(buf, 0, len(buf), transfer_syntax == IMPLICIT_VR_LE, values, 0, False)
    if end != len(buf):  # pragma: no cover - _walk consumes to the end or raises
        raise HeaderError("trailing bytes")
    return _identity(values)


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the spool needs from a Part 10 file's meta group, and where the dataset starts."""

    transfer_syntax: str
    source_aet: str | None
    dataset_offset: int
    # Private Information Creator UID (0002,0100) and Private Information (0002,0102), when present.
    private_creator: str | None = None
    private_information: bytes | None = None
    # Media Storage SOP Class / Instance UID (0002,0002), (0002,0003), when present.
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


def read_file_meta(buf: bytes | memoryview | mmap.mmap) -> FileMeta:
    """Parse the preamble and File Meta Information group (explicit VR little endian) opening ``buf``."""
    view = memoryview(buf)
    if len(view) < 144 or bytes(view[128:132]) != b"DICM":
        raise HeaderError("not a DICOM Part 10 file")
    values: dict[int, bytes] = {}
    pos = 132
    group, elem, vr, length = _TAG_VR_LEN16.unpack_from(view, pos)
    if (group, elem, vr) != (2, 0, b"UL") or length != 4:
        raise HeaderError("file meta without its group length")
    (group_length,) = _LEN32.unpack_from(view, pos + 8)
    pos += 12
    end = pos + group_length
    if end > len(view):
        raise HeaderError("file meta runs past the end of the data")
    while pos < end:
        if pos + 8 > end:
            raise HeaderError("truncated file meta element")
        group, elem, vr, length = _TAG_VR_LEN16.unpack_from(view, pos)
        if group != 2:
            raise HeaderError("file meta element outside group 0002")
        if vr in LONG_VRS:
            (length,) = _LEN32.unpack_from(view, pos + 8)
            pos += 12
        else:
            pos += 8
        if pos + length > end:
            raise HeaderError("file meta element runs past its group")
        values[elem] = bytes(view[pos : pos + length])
        pos += length
    syntax = values.get(0x0010, b"").decode("ascii", "replace").strip(" \x00")
    if not syntax:
        raise HeaderError("file meta without a transfer syntax")
    aet = values.get(0x0016, b"").decode("ascii", "replace").strip(" \x00") or None
    creator = values.get(0x0100, b"").decode("ascii", "replace").strip(" \x00") or None
    sop_class = values.get(0x0002, b"").decode("ascii", "replace").strip(" \x00") or None
    sop_instance = values.get(0x0003, b"").decode("ascii", "replace").strip(" \x00") or None
    return FileMeta(syntax, aet, end, creator, values.get(0x0102), sop_class, sop_instance)


# Highest tag read_identity keeps: a deflated dataset is inflated only as far as the first element after it.
LAST_WANTED = max(WANTED)
# Input and output sizes of one step of inflating a deflated dataset.
DEFLATE_IN = 1 << 16
DEFLATE_OUT = 1 << 18


def _inflate(data: memoryview) -> Iterator[bytes]:
    """The inflated bytes of a raw deflate stream, piece by piece (bounded memory whatever the ratio).

    Raises :class:`HeaderError` when the stream does not inflate or ends before its final block.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        for start in range(0, len(data), DEFLATE_IN):
            pending: bytes | memoryview = data[start : start + DEFLATE_IN]
            while pending and not inflater.eof:
                out = inflater.decompress(pending, DEFLATE_OUT)
                pending = inflater.unconsumed_tail
                if out:
                    yield out
            if inflater.eof:
                break
        while not inflater.eof:
            out = inflater.decompress(b"", DEFLATE_OUT)
            if not out:
                break
            yield out
    except zlib.error as exc:
        raise HeaderError(f"deflated dataset does not inflate: {exc}") from None
    if not inflater.eof:
        raise HeaderError("deflated dataset is truncated")


def _deflated_identity(data: memoryview, prefix_max: int) -> Identity:
    """read_identity of a deflated dataset, inflating only the prefix that holds the wanted attributes.

    The prefix (every element up to the first one after ``LAST_WANTED``) is walked as any dataset; the rest
    is inflated in bounded pieces and discarded, which proves the deflate stream complete (a stream cut short
    has no final block) without holding the inflated instance in memory.
    """
    pieces = _inflate(data)
    prefix = bytearray()
    done = False
    while True:
        if len(prefix) >= prefix_max:
            raise PrefixTooLong(f"deflated dataset: identifying attributes not within {prefix_max} bytes")
        target = min(max(2 * len(prefix), DEFLATE_OUT), prefix_max)
        while not done and len(prefix) < target:
            piece = next(pieces, None)
            if piece is None:
                done = True
            else:
                prefix += piece
        snapshot = bytes(prefix)
        values: dict[int, bytes] = {}
        try:
            end = _walk(memoryview(snapshot), 0, len(snapshot), False, values, 0, False, LAST_WANTED)
        except WrongVR:
            raise
        except HeaderError:
            if done:
                raise
            continue  # an element runs past what is inflated so far
        if end < len(snapshot) or done:
            break
    for _ in pieces:  # the rest of the stream, to its final block
        pass
    return _identity(values)


def _walk(
    buf: memoryview,
    pos: int,
    end: int,
    implicit: bool,
    values: dict[int, bytes] | None,
    depth: int,
    in_item: bool,
    stop_after: int = 0xFFFFFFFF,
) -> int:
    """Walk elements from ``pos``; stop at ``end`` or, inside an undefined-length item, after its end tag.

    Collects wanted top-level values into ``values`` (None below the top level). Returns the position after
    the last byte consumed, or the position of the first element whose tag is above ``stop_after``.
    """
    if depth > MAX_DEPTH:
        raise HeaderError("sequences nested too deeply")
    previous = -1
    while pos < end:
        if pos + 8 > end:
            raise HeaderError(f"truncated element header at offset {pos}")
        group, elem, length = _TAG_LEN.unpack_from(buf, pos)
        tag = group << 16 | elem
        if tag == ITEM_END:
            if not in_item:
                raise HeaderError(f"unexpected item delimiter at offset {pos}")
            return pos + 8
        if group == 0xFFFE:
            raise HeaderError(f"unexpected item tag at offset {pos}")
        if tag <= previous:
            raise HeaderError(f"elements out of order at offset {pos}")
        if tag > stop_after:
            return pos
        previous = tag
        if implicit:
            vr = b""
            pos += 8
        else:
            _, _, vr, length = _TAG_VR_LEN16.unpack_from(buf, pos)
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise HeaderError(f"truncated element header at offset {pos}")
                (length,) = _LEN32.unpack_from(buf, pos + 8)
                pos += 12
            elif not (vr.isalpha() and vr.isupper()):
                raise HeaderError(f"invalid VR at offset {pos}")
            else:
                pos += 8
            if values is not None and tag in WANTED and vr != EXPECTED_VR[tag]:
                raise WrongVR(
                    f"{keyword_for_tag(tag)} has VR {vr.decode('ascii', 'replace')}, "
                    f"not {EXPECTED_VR[tag].decode()}"
                )
        if length == UNDEFINED:
            # A sequence, an encapsulated pixel data element, or UN holding an implicit-VR sequence.
            pos = _sequence(buf, pos, end, implicit or vr == b"UN", depth + 1)
            continue
        if pos + length > end:
            raise HeaderError(f"element ({group:04X},{elem:04X}) runs past the end of the data")
        if values is not None and tag in WANTED:
            values[tag] = bytes(buf[pos : pos + length])
        if vr == b"SQ" and length:
            _items(buf, pos, pos + length, implicit, depth + 1)
        pos += length
    if in_item:
        raise HeaderError("item without its delimiter")
    return pos


def _sequence(buf: memoryview, pos: int, end: int, implicit: bool, depth: int) -> int:
    """Walk the items of an undefined-length sequence (or encapsulated pixel data) up to its delimiter."""
    while True:
        if pos + 8 > end:
            raise HeaderError("sequence without its delimiter")
        group, elem, length = _TAG_LEN.unpack_from(buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise HeaderError(f"item tag expected at offset {pos - 8}")
        if length == UNDEFINED:
            pos = _walk(buf, pos, end, implicit, None, depth, True)
        else:
            if pos + length > end:
                raise HeaderError("item runs past the end of the data")
            # Items of an encapsulated pixel data element are opaque fragments; items of a sequence are
            # datasets, but a defined-length item is bounded, so skipping it keeps the completeness proof.
            pos += length


def _items(buf: memoryview, pos: int, end: int, implicit: bool, depth: int) -> None:
    """Walk the items of a defined-length sequence occupying ``buf[pos:end]``."""
    while pos < end:
        if pos + 8 > end:
            raise HeaderError("truncated item header")
        group, elem, length = _TAG_LEN.unpack_from(buf, pos)
        if (group << 16 | elem) != ITEM:
            raise HeaderError(f"item tag expected at offset {pos}")
        pos += 8
        if length == UNDEFINED:
            pos = _walk(buf, pos, end, implicit, None, depth, True)
        elif pos + length > end:
            raise HeaderError("item runs past its sequence")
        else:
            pos += length


def _identity(values: dict[int, bytes]) -> Identity:
    encodings = ["iso8859"]
    raw_charset = values.get(SPECIFIC_CHARACTER_SET)
    if raw_charset:
        terms = [t.strip() for t in raw_charset.decode("ascii", "replace").split("\\")]
        try:
            encodings = convert_encodings(terms)
        except (LookupError, ValueError):
            encodings = ["iso8859"]

    def get(tag: int) -> str | None:
        raw = values.get(tag)
        if raw is None:
            return None
        if tag in _TEXT:
            text = decode_bytes(raw, encodings, _PN_DELIMITERS if tag == PATIENT_NAME else set())
        else:
            text = raw.decode("ascii", "replace")
        text = text.strip(" \x00")
        return text or None

    return Identity(
        sop_class_uid=get(SOP_CLASS_UID),
        sop_instance_uid=get(SOP_INSTANCE_UID),
        study_uid=get(STUDY_INSTANCE_UID),
        series_uid=get(SERIES_INSTANCE_UID),
        patient_id=get(PATIENT_ID),
        issuer_of_patient_id=get(ISSUER_OF_PATIENT_ID),
        patient_name=get(PATIENT_NAME),
        patient_birth_date=get(PATIENT_BIRTH_DATE),
        study_date=get(STUDY_DATE),
        study_time=get(STUDY_TIME),
        accession_number=get(ACCESSION_NUMBER),
        study_description=get(STUDY_DESCRIPTION),
        modality=get(MODALITY),
        series_number=get(SERIES_NUMBER),
        series_description=get(SERIES_DESCRIPTION),
        body_part=get(BODY_PART_EXAMINED),
        instance_number=get(INSTANCE_NUMBER),
    )
