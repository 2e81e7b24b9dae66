"""Where subscribers are sent (Subscribe's Content-Location) and which certificate the orchestrator's port serves."""

from __future__ import annotations

from types import SimpleNamespace

from ai_orchestrator.app import Orchestrator
from ai_orchestrator.config import Settings
from ai_orchestrator.http.messages import Request


def _settings(section: dict | None = None, **orthanc: object) -> Settings:
    return Settings.from_orthanc({"AiOrchestrator": {"EventsPort": 8765, **(section or {})}, **orthanc})


def _url(settings: Settings, host: str = "pacs.example.org:8042") -> str:
    fake = SimpleNamespace(settings=settings)
    return Orchestrator._channel_url(fake, Request("POST", "/", headers={"host": host}), "MY AE")  # type: ignore[arg-type]


def test_the_channel_is_on_the_host_the_client_used_plain_or_tls():
    assert _url(_settings()) == "ws://pacs.example.org:8765/ws/subscribers/MY%20AE"
    assert _url(_settings(), "[::1]:8042") == "ws://[::1]:8765/ws/subscribers/MY%20AE"
    tls = _settings({"EventsCertificate": "/etc/orthanc/own.pem"})
    assert tls.ssl_certificate == "/etc/orthanc/own.pem"
    assert _url(tls) == "wss://pacs.example.org:8765/ws/subscribers/MY%20AE"


def test_orthancs_certificate_serves_the_port_too_when_ssl_is_enabled():
    assert _settings(SslEnabled=True, SslCertificate="/etc/orthanc/tls.pem").ssl_certificate == "/etc/orthanc/tls.pem"
    assert _settings(SslEnabled=False, SslCertificate="/etc/orthanc/tls.pem").ssl_certificate is None


def test_behind_a_reverse_proxy_the_channel_is_where_the_proxy_says():
    proxied = _settings({"EventsPublicUrl": "wss://pacs.example.org/ai-events/"})
    assert _url(proxied) == "wss://pacs.example.org/ai-events/ws/subscribers/MY%20AE"
