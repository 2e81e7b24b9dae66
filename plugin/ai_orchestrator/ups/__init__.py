"""The UPS domain (PS3.4 Annex CC) in pure Python: no storage, no HTTP, no Orthanc.

``state_machine`` decides transitions, ``validation`` checks attribute requirements, ``search`` turns
queries into SQL on the columns ``index`` defines, ``attributes`` writes what the server owns.
"""

from .errors import UPSError

__all__ = ["UPSError"]
