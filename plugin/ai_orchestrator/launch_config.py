"""Build the Orthanc configuration a run uses, from the shipped base file and environment variables.

Run by ``scripts/run-orthanc.sh`` (``python -m ai_orchestrator.launch_config BASE OUT``) with the standard
library only, so one code path serves ``make run``, the container and the test fixture.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = PLUGIN_DIR / "orthanc_plugin.py"
DEBIAN_PLUGINS = "/usr/share/orthanc/plugins"


class LaunchConfigError(ValueError):
    """An environment variable holds a value Orthanc cannot run with."""


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "") or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LaunchConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def build(base: dict, environ: Mapping[str, str], repo_dir: Path) -> dict:
    """Return the Orthanc configuration for one run (``base`` is not modified)."""
    config = json.loads(json.dumps(base))
    data_dir = Path(environ.get("ORTHANC_DATA_DIR") or repo_dir / "data").resolve()
    http_port = _port(environ, "ORTHANC_HTTP_PORT", 8042)
    stable_age = environ.get("ORTHANC_STABLE_AGE", "") or "5"
    if not stable_age.isdigit() or int(stable_age) < 1:
        raise LaunchConfigError(f"ORTHANC_STABLE_AGE={stable_age!r} must be a whole number of seconds >= 1")

    config.update({
        "HttpPort": http_port,
        "DicomPort": _port(environ, "ORTHANC_DICOM_PORT", 4242),
        "StorageDirectory": str(data_dir / "orthanc-storage"),
        "IndexDirectory": str(data_dir / "orthanc-storage"),
        "StableAge": int(stable_age),
        "PythonScript": str(ENTRY_SCRIPT),
        "Plugins": [f"{DEBIAN_PLUGINS}/libOrthancPython.so", f"{DEBIAN_PLUGINS}/libOrthancDicomWeb.so"],
    })
    _merge(config, _json_object(environ, "ORTHANC_SETTINGS", '{"Python": {"AllowThreads": false}}'))
    _apply_access(config, environ)  # after: access is only ever opened through its own variables, checked
    plugin = config.setdefault("AiOrchestrator", {})
    plugin["DataDirectory"] = str(data_dir)
    plugin["EventsPort"] = _port(environ, "AI_ORCHESTRATOR_WS_PORT", plugin.get("EventsPort", 8765))
    plugin["PublicUrl"] = environ.get("AI_ORCHESTRATOR_PUBLIC_URL") or plugin.get(
        "PublicUrl", f"http://localhost:{http_port}")
    if environ.get("AI_ORCHESTRATOR_MODELS_DIR"):
        plugin["ModelsDirectory"] = str(Path(environ["AI_ORCHESTRATOR_MODELS_DIR"]).resolve())
    else:
        plugin.setdefault("ModelsDirectory", str(repo_dir / "models"))
    if environ.get("AI_ORCHESTRATOR_DEVICE"):
        plugin["Device"] = environ["AI_ORCHESTRATOR_DEVICE"]
    plugin.update(_json_object(environ, "AI_ORCHESTRATOR_SETTINGS", '{"LeaseSeconds": 600}'))
    return config


def _json_object(environ: Mapping[str, str], name: str, example: str) -> dict:
    """``AI_ORCHESTRATOR_SETTINGS`` (merged over the "AiOrchestrator" section) or ``ORTHANC_SETTINGS`` (merged over
    the whole Orthanc configuration, sections included): a JSON object, for containers, tests and benchmarks."""
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise LaunchConfigError(f"{name} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise LaunchConfigError(f"{name} must be a JSON object, e.g. {example}")
    return value


def _merge(config: dict, override: Mapping) -> None:
    """Merge ``override`` into ``config``: objects key by key, anything else replaced."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


def _apply_access(config: dict, environ: Mapping[str, str]) -> None:
    """Local-only without login by default; remote access only together with authentication."""
    user, password = environ.get("ORTHANC_USERNAME", ""), environ.get("ORTHANC_PASSWORD", "")
    if bool(user) != bool(password):
        raise LaunchConfigError("set both ORTHANC_USERNAME and ORTHANC_PASSWORD, or neither")
    remote = _flag(environ, "ORTHANC_REMOTE_ACCESS")
    if remote and not user:
        raise LaunchConfigError("ORTHANC_REMOTE_ACCESS=1 needs ORTHANC_USERNAME and ORTHANC_PASSWORD")
    config["RemoteAccessAllowed"] = remote
    config["AuthenticationEnabled"] = bool(user)
    if user:
        config["RegisteredUsers"] = {user: password}


def main(argv: list[str]) -> int:
    import os

    if len(argv) != 3:
        print("usage: python -m ai_orchestrator.launch_config BASE_JSON OUT_JSON", file=sys.stderr)
        return 2
    base_path, out_path = Path(argv[1]), Path(argv[2])
    try:
        config = build(json.loads(base_path.read_text()), os.environ, base_path.resolve().parent.parent)
    except (LaunchConfigError, json.JSONDecodeError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(config, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
