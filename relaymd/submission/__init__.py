"""Submitting a job: build and validate its spec, pack, upload, verify, THEN register.

Order matters (nothing half-written): a job row exists only for a bundle that was read back
from storage with the right sha256. Any failure after the upload deletes the object again, so
a failed submit leaves neither a job row nor a stray bundle.

One step per module, in that order: spec.py (relaymd.yaml + flags -> JobSpec), checks.py
(what can be checked before a byte moves), prepare.py (one directory validated and scanned),
upload.py (pack, upload, read back), register.py (the job row), submit.py (one directory or
many, with Ctrl-C handling); errors.py holds what they raise.

Used by `relaymd submit`, `relaymd demo`, the Python API (relaymd.api) and tests: the layer
below both front-ends, importing only config, models, storage and small helpers.
"""
