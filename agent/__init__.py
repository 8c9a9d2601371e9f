"""liver-agent: a DICOM agent that pre-computes liver tumour response beside the PACS."""

__version__ = "0.1.0"
