"""What the Orthanc that runs the plugin can do, as a small typed object.

The entry module detects it once at start-up (it alone talks to ``orthanc``) and hands it on; the rest of the
package reads these flags and never compares versions itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    orthanc_labels: bool = False
    """Orthanc 1.12+: resources carry labels (``PUT /studies/{id}/labels/{label}``, ``/tools/find`` "Labels")."""

    keep_alive_timeout: bool = False
    """Orthanc 1.11.3+: the HTTP server honours "KeepAliveTimeout" (before, idle connections close after ~1 s)."""

    sdk_calls_release_gil: bool = False
    """Python plugin 4.3+ with "Python": {"AllowThreads": true}: the GIL is released during ``orthanc.*`` calls."""

    python_plugin_version: str | None = None
    """The Python plugin's version when it could be read (Debian names the file ``libOrthancPython.so.X.Y``)."""

    def describe(self) -> dict[str, object]:
        """The JSON that ``GET /ai-orchestrator/system`` shows."""
        return {"OrthancLabels": self.orthanc_labels, "KeepAliveTimeout": self.keep_alive_timeout,
                "SdkCallsReleaseGil": self.sdk_calls_release_gil, "PythonPluginVersion": self.python_plugin_version}
