"""AI orchestrator for Orthanc: UPS-RS workitems, model registry and in-process inference."""

__version__ = "0.1.0"
