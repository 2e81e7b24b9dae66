"""The UPS domain (PS3.4 Annex CC) in pure Python: no storage, no HTTP, no Orthanc.

``state_machine`` decides transitions, ``validation`` checks attribute requirements, ``search`` turns
queries into match conditions (``criteria``) on the attributes ``index`` defines, ``attributes`` writes what the
server owns, ``clock`` is the one clock and writes DT values, ``notifications`` carries events to listeners.
"""

from .errors import UPSError

__all__ = ["UPSError"]
