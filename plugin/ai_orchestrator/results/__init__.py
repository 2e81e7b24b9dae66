"""Results as DICOM, written with highdicom: SEG (``seg``), TID 1500 SR (``sr``), a Secondary Capture preview
(``preview``), their shared ``provenance`` (and how our own series are recognised), and ``encoding`` to bytes.
"""
