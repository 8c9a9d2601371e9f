// Makes the OHIF v3 measurement SRs in this folder with the code OHIF 3.13 saves them with:
// @cornerstonejs/adapters (Cornerstone3D MeasurementReport.generateReport) and dcmjs, versions pinned in
// package.json. Run: npm ci && node make.mjs   (the tests read only the .dcm files written here).
//
// Each annotation is the object Cornerstone3D's tools keep (handles.points in patient coordinates,
// cachedStats per image id, data.label = the radiologist's label); the images are described by a small
// metadata provider (an axial CT slice: origin, 0.75 mm pixels), and world -> image coordinates use the
// same plane, as cornerstone's worldToImageCoords does for a loaded image.
import fs from 'node:fs';
import dcmjs from 'dcmjs';
import { adaptersSR, helpers } from '@cornerstonejs/adapters';

const { MeasurementReport } = adaptersSR.Cornerstone3D;
const SPACING = 0.75;
const ORIGIN = [-192.0, -192.0, 0.0];
const CT = '1.2.840.10008.5.1.4.1.1.2';
const ROOT = '1.2.826.0.1.3680043.10.1455.14';

const images = {};
function image(patient, study, z) {
  const n = `${patient.n}.${study.n}`;
  const id = `wadors:${n}:${z}`;
  images[id] = {
    PatientName: patient.name, PatientID: patient.id, PatientBirthDate: '19600101', PatientSex: 'F',
    StudyInstanceUID: `${ROOT}.${n}`, StudyDate: study.date, StudyTime: '100000', AccessionNumber: `ACC${n.replace('.', '')}`,
    StudyID: `S${study.n}`, StudyDescription: 'CT ABDOMEN LIVER', ReferringPhysicianName: '',
    SeriesInstanceUID: `${ROOT}.${n}.1`, SeriesNumber: 2, SeriesDescription: 'PORTAL VENOUS 2.5mm', Modality: 'CT',
    SOPInstanceUID: `${ROOT}.${n}.1.${z}`, SOPClassUID: CT, z: ORIGIN[2] + z * 2.5,
  };
  return id;
}

function metadataProvider(type, id) {
  const im = images[id];
  if (type === 'sopCommonModule') return { sopInstanceUID: im.SOPInstanceUID, sopClassUID: im.SOPClassUID };
  if (type === 'instance') return { ...im };
  if (type === 'frameNumber') return 1;
  if (type === 'imagePlaneModule') return { frameOfReferenceUID: `${im.StudyInstanceUID}.9`, rowPixelSpacing: SPACING, columnPixelSpacing: SPACING };
  return undefined;
}
helpers.setWorldToImageCoords((id, p) => [(p[0] - ORIGIN[0]) / SPACING, (p[1] - ORIGIN[1]) / SPACING]);

const world = (id, col, row) => [ORIGIN[0] + col * SPACING, ORIGIN[1] + row * SPACING, images[id].z];
const dist = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

function bidirectional(id, label, cx, cy, longMm, shortMm) {
  const l = longMm / SPACING / 2, s = shortMm / SPACING / 2;
  const points = [world(id, cx - l, cy), world(id, cx + l, cy), world(id, cx, cy - s), world(id, cx, cy + s)];
  return {
    metadata: { toolName: 'Bidirectional', referencedImageId: id, FrameOfReferenceUID: `${images[id].StudyInstanceUID}.9` },
    data: {
      label,
      handles: { points, textBox: { hasMoved: false } },
      cachedStats: { [`imageId:${id}`]: { length: dist(points[0], points[1]), width: dist(points[2], points[3]), unit: 'mm' } },
    },
  };
}

function length(id, label, cx, cy, mm) {
  const l = mm / SPACING / 2;
  const points = [world(id, cx - l, cy), world(id, cx + l, cy)];
  return {
    metadata: { toolName: 'Length', referencedImageId: id, FrameOfReferenceUID: `${images[id].StudyInstanceUID}.9` },
    data: { label, handles: { points, textBox: { hasMoved: false } }, cachedStats: { [`imageId:${id}`]: { length: dist(points[0], points[1]), unit: 'mm' } } },
  };
}

function ellipse(id, label, cx, cy, wMm, hMm, mean) {
  const a = wMm / SPACING / 2, b = hMm / SPACING / 2;
  const points = [world(id, cx, cy - b), world(id, cx, cy + b), world(id, cx - a, cy), world(id, cx + a, cy)];
  const area = Math.PI * (wMm / 2) * (hMm / 2);
  return {
    metadata: { toolName: 'EllipticalROI', referencedImageId: id, FrameOfReferenceUID: `${images[id].StudyInstanceUID}.9` },
    data: {
      label, handles: { points, textBox: { hasMoved: false } },
      cachedStats: { [`imageId:${id}`]: { area, areaUnit: 'mm²', mean, max: mean + 30, min: mean - 30, stdDev: 12.5, modalityUnit: 'HU' } },
    },
  };
}

function write(name, patient, study, annotations) {
  const toolState = {};
  for (const a of annotations) {
    const id = a.metadata.referencedImageId;
    toolState[id] ||= {};
    toolState[id][a.metadata.toolName] ||= { data: [] };
    toolState[id][a.metadata.toolName].data.push(a);
  }
  const get = (type, id) => metadataProvider(type, id);
  const n = `${patient.n}.${study.n}`;
  const report = MeasurementReport.generateReport(toolState, { get }, {
    SeriesInstanceUID: `${ROOT}.${n}.99`, SOPInstanceUID: `${ROOT}.${n}.99.1`, SeriesNumber: 99,
    SeriesDescription: 'Research Derived series', InstanceNumber: 1,
  });
  const { dataset } = report;
  const meta = {
    FileMetaInformationVersion: dataset._meta.FileMetaInformationVersion.Value,
    MediaStorageSOPClassUID: dataset.SOPClassUID, MediaStorageSOPInstanceUID: dataset.SOPInstanceUID,
    TransferSyntaxUID: '1.2.840.10008.1.2.1', ImplementationClassUID: dcmjs.data.DicomMetaDictionary.uid(),
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  fs.writeFileSync(name, Buffer.from(dict.write()));
  console.log(name, dataset.SOPClassUID, annotations.length, 'annotations');
}

// Patient A: labels written by the radiologist, the same at both time points (different case/spacing).
const A = { n: 1, name: 'OHIF^LABELS', id: 'OHIF-A' };
const a1 = { n: 1, date: '20260105' }, a2 = { n: 2, date: '20260302' };
const a1i = [image(A, a1, 40), image(A, a1, 52)], a2i = [image(A, a2, 41), image(A, a2, 50)];
write('ohif3_labels_baseline.dcm', A, a1, [
  bidirectional(a1i[0], 'Target 1 seg VII', 200, 260, 42.0, 30.0),
  bidirectional(a1i[1], 'T2 (seg IVa)', 300, 200, 25.5, 18.0),
  length(a1i[1], 'Läsion 3 seg II', 360, 150, 15.0),
]);
write('ohif3_labels_followup.dcm', A, a2, [
  bidirectional(a2i[1], 't2  (Seg IVa)', 305, 205, 20.25, 15.0),
  bidirectional(a2i[0], 'target 1 seg vii', 198, 262, 30.0, 22.5),
  length(a2i[1], 'läsion 3 seg ii', 362, 152, 12.0),
]);
// Patient B: no labels (the tool name is all the tracking identifier says).
const B = { n: 2, name: 'OHIF^NOLABELS', id: 'OHIF-B' };
const b1 = { n: 1, date: '20260110' }, b2 = { n: 2, date: '20260310' };
const b1i = [image(B, b1, 30), image(B, b1, 60)], b2i = [image(B, b2, 31), image(B, b2, 59)];
write('ohif3_nolabels_baseline.dcm', B, b1, [
  bidirectional(b1i[0], undefined, 180, 250, 50.0, 35.0),
  bidirectional(b1i[1], undefined, 320, 180, 30.0, 21.0),
]);
write('ohif3_nolabels_followup.dcm', B, b2, [
  bidirectional(b2i[1], undefined, 322, 183, 33.0, 24.0),
  bidirectional(b2i[0], undefined, 182, 248, 52.5, 36.0),
]);
// A third study of patient B, again without labels (a later study reusing the confirmed identities).
const b3 = { n: 3, date: '20260512' };
const b3i = [image(B, b3, 32), image(B, b3, 58)];
write('ohif3_nolabels_followup2.dcm', B, b3, [
  bidirectional(b3i[0], undefined, 183, 249, 40.5, 27.0),
  bidirectional(b3i[1], undefined, 323, 184, 36.0, 25.5),
]);
// An elliptical ROI with its area and HU statistics.
write('ohif3_ellipse_stats.dcm', A, a1, [ellipse(a1i[0], 'Target 1 seg VII', 200, 260, 42.0, 30.0, 55.0)]);

// OHIF v2 (cornerstoneTools 4) through dcmjs's own Cornerstone adapter: the label is the meaning of a
// CORNERSTONEFREETEXT finding (scheme CST4), as OHIF v2 saved it; handles in image pixels.
const Legacy = dcmjs.adapters.Cornerstone.MeasurementReport;
function legacyBidirectional(label, cx, cy, longMm, shortMm) {
  const l = longMm / SPACING / 2, s = shortMm / SPACING / 2;
  return {
    handles: { start: { x: cx - l, y: cy }, end: { x: cx + l, y: cy }, perpendicularStart: { x: cx, y: cy - s }, perpendicularEnd: { x: cx, y: cy + s } },
    longestDiameter: longMm, shortestDiameter: shortMm,
    finding: { CodeValue: 'CORNERSTONEFREETEXT', CodingSchemeDesignator: 'CST4', CodeMeaning: label },
    findingSites: [],
  };
}
function writeLegacy(name, patient, study, perImage) {
  const toolState = {};
  for (const [id, tools] of perImage) toolState[id] = { Bidirectional: { data: tools } };
  const get = (type, id) => {
    const im = images[id];
    if (type === 'generalSeriesModule') return { studyInstanceUID: im.StudyInstanceUID, seriesInstanceUID: im.SeriesInstanceUID };
    return metadataProvider(type, id);
  };
  const n = `${patient.n}.${study.n}`;
  const report = Legacy.generateReport(toolState, { get }, {});
  const dataset = report.dataset;
  Object.assign(dataset, {
    PatientName: patient.name, PatientID: patient.id, PatientBirthDate: '19600101', PatientSex: 'F',
    StudyDate: study.date, StudyTime: '100000', AccessionNumber: `ACC${n.replace('.', '')}`, StudyID: `S${study.n}`,
    SeriesInstanceUID: `${ROOT}.${n}.98`, SOPInstanceUID: `${ROOT}.${n}.98.1`, SeriesNumber: 98,
  });
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: dataset.SOPClassUID, MediaStorageSOPInstanceUID: dataset.SOPInstanceUID,
    TransferSyntaxUID: '1.2.840.10008.1.2.1', ImplementationClassUID: '2.25.80302813137786398554742050926734630921603366648225212145404',
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  fs.writeFileSync(name, Buffer.from(dict.write()));
  console.log(name, dataset.SOPClassUID, 'cornerstoneTools 4 (dcmjs Cornerstone adapter)');
}
const C = { n: 3, name: 'OHIF2^LEGACY', id: 'OHIF-C' };
const c1 = { n: 1, date: '20250901' }, c2 = { n: 2, date: '20251105' };
const c1i = [image(C, c1, 20), image(C, c1, 35)], c2i = [image(C, c2, 21), image(C, c2, 36)];
writeLegacy('ohif2_freetext_baseline.dcm', C, c1, [
  [c1i[0], [legacyBidirectional('Liver lesion A', 210, 240, 36.0, 24.0)]],
  [c1i[1], [legacyBidirectional('Liver lesion B', 300, 230, 22.5, 15.0)]],
]);
writeLegacy('ohif2_freetext_followup.dcm', C, c2, [
  [c2i[1], [legacyBidirectional('liver lesion b', 302, 231, 30.0, 21.0)]],
  [c2i[0], [legacyBidirectional('LIVER LESION A', 211, 241, 45.0, 30.0)]],
]);
