"""agent.sr.hdcontent pins the one highdicom internal the writer relies on: an SR made from the root
container alone, with the tree attached afterwards, equals the SR highdicom's public constructor makes from
the whole tree, and the highdicom code behind it is still what we read."""

from __future__ import annotations

import copy
import inspect
import io
from datetime import date

import highdicom as hd
import numpy as np
from highdicom.sr import sop as hd_sop
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from agent.sr.hdcontent import CONTENT_SEQUENCE, attach_content
from tests.unit.sr.srgen import ct_image, uid

MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")


def _content(image: Dataset) -> Dataset:
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("pin-lesion"), identifier="liver seg 7"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[1.0, 1.0], [5.0, 5.0]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(image),
        ),
        finding_type=codes.SCT.Lesion,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
        measurements=[hd.sr.Measurement(name=codes.SCT.LongAxis, value=31.0, unit=MM)],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[group],
    )
    return report[0]


def _sr(image: Dataset, content: Dataset) -> hd.sr.ComprehensiveSR:
    return hd.sr.ComprehensiveSR(
        evidence=[image],
        content=content,
        series_instance_uid=uid("pin-series"),
        series_number=1,
        sop_instance_uid=uid("pin-sr"),
        instance_number=1,
        manufacturer="pin",
        content_date="20240101",
        content_time="120000",
        series_date="20240101",
        series_time="120000",
    )


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    copy.deepcopy(ds).save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_attached_tree_equals_what_the_public_constructor_makes() -> None:
    image = ct_image("PIN", "pin", date(2024, 1, 1))
    root = _content(image)
    public = _sr(image, root)
    shallow = Dataset()
    for elem in root:
        shallow.add(elem if elem.tag != CONTENT_SEQUENCE else DataElement(CONTENT_SEQUENCE, "SQ", []))
    fast = _sr(image, shallow)
    assert len(fast.content[0].ContentSequence) == 0  # without the adapter the tree is missing
    attach_content(fast, root)
    for sr in (public, fast):  # highdicom's stamps of the current time are not the content
        for item in sr.get("ContributingEquipmentSequence", []):
            item.ContributionDateTime = "20240101120000"
        sr.InstanceCreationDate, sr.InstanceCreationTime = "20240101", "120000"
    assert _bytes(fast) == _bytes(public)
    assert fast.content == public.content
    assert len(fast.content[0].ContentSequence) == len(root.ContentSequence) > 0
    # Read back through highdicom's public parser, the attached tree is the tree.
    parsed = hd.sr.ComprehensiveSR.from_dataset(fast)
    groups = parsed.content.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["liver seg 7"]


def test_the_highdicom_internal_we_set_is_still_what_its_content_property_returns() -> None:
    assert hd.__version__.split(".")[:2] == ["0", "28"] or hd.__version__.startswith("0.29")
    getter = inspect.getsource(hd_sop._SR.content.fget)
    assert "return self._content" in getter
    init = inspect.getsource(hd_sop._SR.__init__)
    assert "self._content = ContentSequence([content_item], is_root=True)" in init
