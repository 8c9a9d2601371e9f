"""DICOM network edge and file spool: the C-STORE/C-ECHO SCP, the atomic spool and header reading."""
