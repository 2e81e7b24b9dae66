"""The OpenAPI description is true: served by both front doors, names every route, and a fuzzer driven by it
(schemathesis, bounded, fixed seed) finds no server error, no answer outside it, and no change from a rejected
request."""

from __future__ import annotations

import hashlib
import json
import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import positive_data_acceptance, unsupported_method

from ai_orchestrator.app import Orchestrator
from ai_orchestrator.http.openapi import description
from ai_orchestrator.http.workitems import WorkitemsApi
from tests.integration.studies import wait_for
from tests.orthanc_server import OrthancServer

SPEC = description(8765)
ROOT = "/ai-orchestrator"
SAMPLE = {"uid": "1.2.3.4", "ae_title": "ME", "study": "0000"}


@schemathesis.serializer("application/dicom+json")
def _dicom_json(ctx, value) -> bytes:  # noqa: ANN001 - schemathesis' serializer signature
    return json.dumps(value).encode()


def _filled(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], template)


def test_both_front_doors_serve_one_valid_description(orthanc):
    from_orthanc = orthanc.client.get(f"{ROOT}/openapi.json")
    assert from_orthanc.status_code == 200
    validate(from_orthanc.json())
    with httpx.Client(base_url=orthanc.own_port_url) as own:
        from_own = wait_for(lambda: own.get("/openapi.json"), timeout=30)
        assert from_own.status_code == 200 and from_own.json()["paths"] == from_orthanc.json()["paths"]


def test_every_route_of_the_plugin_is_described():
    described = [_filled(path) for path in SPEC["paths"]]
    for pattern, handler in Orchestrator.ROUTES:
        if handler == "workitems.handle":
            continue  # below, shape by shape
        assert any(re.match(pattern, path) for path in described), f"{pattern} ({handler}) is not described"
    shapes = WorkitemsApi(service=None)._routes  # type: ignore[arg-type]
    for (count, literal), methods in shapes.items():
        matching = [path for path in SPEC["paths"] if path.startswith("/workitems")
                    and len(path.split("/")) - 2 == count
                    and (literal is None or path.rsplit("/", 1)[-1] == literal or path.split("/")[3] == literal)]
        assert matching, f"workitems route {count, literal} is not described"
        for method in methods:
            assert any(method.lower() in SPEC["paths"][path] for path in matching), (count, literal, method)


def test_every_described_operation_is_routed(orthanc):
    for path, item in SPEC["paths"].items():
        if path.startswith("/ws/"):
            continue
        for method in item:
            if method == "parameters":
                continue
            answer = orthanc.client.request(method.upper(), ROOT + _filled(path))
            assert answer.status_code != 405, (method, path)
            assert not (answer.status_code == 404 and "no such route" in answer.text.lower()), (method, path)


# The fuzzer -------------------------------------------------------------------------------------------------

schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture(scope="module")
def quiet_orthanc(tmp_path_factory):
    """An Orthanc whose store only requests change: no in-process performer, no studies."""
    settings_env = {"AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0})}
    with OrthancServer(tmp_path_factory.mktemp("orthanc-fuzz"), extra_env=settings_env) as server:
        yield server


def _store_digest(server: OrthancServer) -> str:
    answer = server.client.get(f"{ROOT}/workitems", params={"includefield": "all", "limit": "1000"})
    assert answer.status_code == 200
    return hashlib.sha256(answer.content).hexdigest()


@schema.exclude(path_regex="^/ws/").parametrize()
@settings(max_examples=20, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_rejected_ones_change_nothing(case, quiet_orthanc):
    before = _store_digest(quiet_orthanc)
    response = case.call(base_url=quiet_orthanc.base_url + ROOT)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    # A DICOM JSON dataset's shape is all a schema can say: the UPS rules (PS3.4 Table CC.2.5-3) decide the rest,
    # so a schema-valid body may still be refused, with a 4xx that names the rule.
    # Orthanc's own HTTP server answers methods it does not know (TRACE...) with 400 before any plugin sees them.
    case.validate_response(response, excluded_checks=[positive_data_acceptance, unsupported_method])
    if 400 <= response.status_code < 500:
        assert _store_digest(quiet_orthanc) == before, f"{case.method} {case.formatted_path} was refused but changed"


@schema.include(path_regex="^/workitems").parametrize()
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_on_the_orchestrators_port(case, quiet_orthanc):
    """The same UPS-RS API on the own port (aiohttp answers undeclared methods with 405 itself)."""
    with httpx.Client(base_url=quiet_orthanc.own_port_url) as own:
        wait_for(lambda: own.get("/openapi.json").status_code == 200, timeout=30)
    before = _store_digest(quiet_orthanc)
    response = case.call(base_url=quiet_orthanc.own_port_url)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if 400 <= response.status_code < 500:
        assert _store_digest(quiet_orthanc) == before, f"{case.method} {case.formatted_path} was refused but changed"
