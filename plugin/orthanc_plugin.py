"""The script Orthanc's Python plugin loads (configuration option "PythonScript").

It only makes the venv's packages importable, then hands over to ``ai_orchestrator.entry``.
"""

import os
import site
import sys

_venv = os.environ.get("AI_ORCHESTRATOR_VENV")
if _venv:
    site.addsitedir(os.path.join(_venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                                 "site-packages"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ai_orchestrator import entry  # noqa: E402

entry.start()
