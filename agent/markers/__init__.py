"""Tumour marker results of patients: storage, CSV import and HL7 v2 ORU^R01 over MLLP (docs/criteria.md
§13.2). The pipeline reads a patient's results into the response timeline (``store.load``)."""
