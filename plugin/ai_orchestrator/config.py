"""The plugin's settings, read once from Orthanc's configuration into a typed object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting of the "AiOrchestrator" section is missing or wrong; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    public_url: str  # how clients reach this Orthanc, e.g. http://localhost:8042
    dicomweb_root: str  # e.g. /dicom-web
    http_port: int
    events_port: int
    device: str  # "auto", "cpu", "cuda", "cuda:1"...
    workers: int
    max_attempts: int
    scheduled_max_age_s: int  # 0: never cancel old SCHEDULED items
    lease_s: int  # 0: IN PROGRESS items never expire
    retention_days: int  # 0: keep final items forever
    housekeeping_interval_s: int
    rules: tuple[Mapping[str, Any], ...] = ()
    forward_to: str | None = None  # Orthanc modality name results are C-STOREd to
    delete_study_after_forward: bool = False
    remote_access: bool = False  # Orthanc's RemoteAccessAllowed: the orchestrator's port follows it
    authentication: bool = False  # Orthanc's AuthenticationEnabled (on by default with remote access)
    registered_users: Mapping[str, str] = field(default_factory=dict)
    dicom_aet: str = "ORTHANC"  # Orthanc's own AE title: the in-process performer's, in worklist answers
    worklist_filter_issuer_aet: bool = False  # a worklist C-FIND gets only the calling AE's items
    metrics_interval_s: int = 10  # how often the metrics are published to Orthanc
    forward_retry_s: int = 86400  # how long forwarding to a destination that is down is tried again
    forward_retry_interval_s: int = 60  # the longest pause between two tries
    model_host: str = "process"  # where models run: "process" (a supervised child), "thread" (debugging only)
    model_hosts: int = 1  # model hosts (each a process and a model thread) on a CPU; one on a GPU
    host_python: str | None = None  # the Python a host runs; None: the venv's ($AI_ORCHESTRATOR_VENV/bin/python)
    model_timeout_s: int = 600  # a run's timeout in the host when the model declares none (ModelSpec.timeout_s)
    host_memory_limit_mb: int = 0  # resident memory of one host before it is killed; 0: no limit of ours
    host_start_timeout_s: int = 300  # loading the models and warming them up
    warm_up_slices: int = 100  # the warm-up phantom's slices: a study of the usual size, so the first is not slower
    host_nice: int = 10  # the host's CPU priority below Orthanc's (nice): Orthanc's own work goes first on a busy CPU
    store_max_size_mb: int = 0  # the most the workitem store may grow to (507 past it); 0: what the disk holds
    stable_age_s: int = 60  # Orthanc's StableAge: how long a study waits without new instances to be stable
    ssl_certificate: str | None = None  # the own port serves TLS with it: EventsCertificate, else Orthanc's own
    events_public_url: str | None = None  # the event channel's base URL as clients reach it (a reverse proxy's)
    loopback_store: bool = True  # results are stored through Orthanc's HTTP port on 127.0.0.1 where SDK calls hold the GIL
    http_server_enabled: bool = True  # Orthanc's HttpServerEnabled
    ssl_enabled: bool = False  # Orthanc's SslEnabled: its HTTP port speaks TLS

    @property
    def store_path(self) -> Path:
        return self.data_dir / "ai-orchestrator.sqlite"

    @property
    def dicomweb_url(self) -> str:
        return self.public_url.rstrip("/") + "/" + self.dicomweb_root.strip("/")

    @classmethod
    def from_orthanc(cls, orthanc_config: Mapping[str, Any]) -> Settings:
        section = orthanc_config.get("AiOrchestrator", {})
        if not isinstance(section, dict):
            raise ConfigError('"AiOrchestrator" must be a JSON object')
        http_port = int(orthanc_config.get("HttpPort", 8042))
        data_dir = section.get("DataDirectory") or orthanc_config.get("StorageDirectory") or "OrthancStorage"
        rules = section.get("Rules", [])
        if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
            raise ConfigError('"AiOrchestrator.Rules" must be a list of JSON objects')
        return cls(
            data_dir=Path(data_dir),
            models_dir=Path(section.get("ModelsDirectory", "models")),
            public_url=str(section.get("PublicUrl", f"http://localhost:{http_port}")).rstrip("/"),
            dicomweb_root=str(orthanc_config.get("DicomWeb", {}).get("Root", "/dicom-web/")),
            http_port=http_port,
            events_port=_int(section, "EventsPort", 8765, minimum=1),
            device=str(section.get("Device", "auto")),
            workers=_int(section, "Workers", 1, minimum=0),
            max_attempts=_int(section, "MaxAttempts", 3, minimum=1),
            scheduled_max_age_s=_int(section, "ScheduledMaxAgeSeconds", 0),
            lease_s=_int(section, "LeaseSeconds", 3600),
            retention_days=_int(section, "RetentionDays", 0),
            housekeeping_interval_s=_int(section, "HousekeepingIntervalSeconds", 60, minimum=1),
            rules=tuple(rules),
            forward_to=section.get("ForwardTo") or None,
            delete_study_after_forward=bool(section.get("DeleteStudyAfterForward", False)),
            remote_access=bool(orthanc_config.get("RemoteAccessAllowed", False)),
            authentication=_authentication(orthanc_config),
            registered_users=_users(orthanc_config),
            dicom_aet=str(orthanc_config.get("DicomAet", "ORTHANC")),
            worklist_filter_issuer_aet=bool(section.get("WorklistFilterIssuerAet", False)),
            metrics_interval_s=_int(section, "MetricsIntervalSeconds", 10, minimum=1),
            forward_retry_s=_int(section, "ForwardRetrySeconds", 86400),
            forward_retry_interval_s=_int(section, "ForwardRetryIntervalSeconds", 60, minimum=1),
            model_host=_choice(section, "ModelHost", ("process", "thread")),
            model_hosts=_int(section, "ModelHosts", 1, minimum=1),
            host_python=str(section["HostPython"]) if section.get("HostPython") else None,
            model_timeout_s=_int(section, "ModelTimeoutSeconds", 600, minimum=1),
            host_memory_limit_mb=_int(section, "HostMemoryLimitMB", 0),
            host_start_timeout_s=_int(section, "HostStartTimeoutSeconds", 300, minimum=1),
            warm_up_slices=_int(section, "WarmUpSlices", 100, minimum=1),
            host_nice=_int(section, "HostNice", 10, maximum=19),
            store_max_size_mb=_int(section, "StoreMaxSizeMB", 0),
            stable_age_s=int(orthanc_config.get("StableAge", 60)),
            ssl_certificate=_certificate(section, orthanc_config),
            events_public_url=str(section["EventsPublicUrl"]).rstrip("/") if section.get("EventsPublicUrl") else None,
            loopback_store=_bool(section, "LoopbackStore", True),
            http_server_enabled=bool(orthanc_config.get("HttpServerEnabled", True)),
            ssl_enabled=bool(orthanc_config.get("SslEnabled", False)),
        )


def _certificate(section: Mapping[str, Any], orthanc_config: Mapping[str, Any]) -> str | None:
    """The PEM file (private key and certificate) the orchestrator's port serves HTTPS and wss:// with:
    "EventsCertificate", else Orthanc's own "SslCertificate" when "SslEnabled"; None: plain HTTP and ws://."""
    if section.get("EventsCertificate"):
        return str(section["EventsCertificate"])
    if orthanc_config.get("SslEnabled") and orthanc_config.get("SslCertificate"):
        return str(orthanc_config["SslCertificate"])
    return None


def _authentication(orthanc_config: Mapping[str, Any]) -> bool:
    return bool(orthanc_config.get("AuthenticationEnabled", orthanc_config.get("RemoteAccessAllowed", False)))


def _users(orthanc_config: Mapping[str, Any]) -> dict[str, str]:
    users = orthanc_config.get("RegisteredUsers", {})
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise ConfigError('"RegisteredUsers" must map user names to passwords')
    return {str(name): password for name, password in users.items()}


def _int(section: Mapping[str, Any], name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f'"AiOrchestrator.{name}" must be a whole number {bounds}, not {value!r}')
    return value


def _choice(section: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = section.get(name, choices[0])
    if value not in choices:
        raise ConfigError(f'"AiOrchestrator.{name}" must be one of {", ".join(map(repr, choices))}, not {value!r}')
    return str(value)


def _bool(section: Mapping[str, Any], name: str, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f'"AiOrchestrator.{name}" must be true or false, not {value!r}')
    return value
