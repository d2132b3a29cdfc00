"""Property-based fuzzing of the whole HTTP API: schemathesis generates requests from the OpenAPI document of the
running gateway (real uvicorn, tiny model, the test Redis under a private prefix), valid and invalid ones, for
every operation, and checks each answer:

- no 5xx (`not_a_server_error`);
- the status is one the operation documents, and the body matches the documented schema for it;
- every 4xx is the error envelope `{"error": {"type", "message", "param"}}`.

Admin operations get the admin token (the refusals without it are tested in test_admin.py and
test_hostile_input.py), so generated bodies reach validation, encoding and the index.

Each of the 9 operations is fuzzed with requests that fit the schema (positive) and, where it takes any input,
with requests that break it (negative): 15 runs. Profiles: `REASONREC_FUZZ=short` (the default, part of
`make test`: 10 cases per run, fixed seeds) and `long` (`make fuzz`: 150 per run, about 1,500 in all, random
seeds; it writes its figures into docs/results/reliability.md and .json through `reliability_report`). The spec
fuzzed is the app's, and a test checks that the running server serves exactly it.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from reliability_report import record
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from service_helpers import (
    ADMIN_TOKEN,
    Server,
    make_catalog,
    private_prefix,
    start_server,
    tiny_settings,
    write_sasrec_checkpoint,
)

from service.main import create_app
from service.settings import Settings

PROFILES = {"short": 10, "long": 150}
CATALOG_SIZE = 36  # service_helpers.make_catalog()
REASONING_CAP = 32  # tiny_settings' max_reasoning_tokens
PROFILE = os.environ.get("REASONREC_FUZZ", "short")
if PROFILE not in PROFILES:
    raise ValueError(f"REASONREC_FUZZ={PROFILE!r}: choose one of {', '.join(PROFILES)}")
EXAMPLES = PROFILES[PROFILE]

TALLY: Counter[str] = Counter()
"""Cases sent, by "METHOD /path status" (and "server_errors"), for the report."""


@schemathesis.check
def error_envelope(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every 4xx answer is the error envelope, with a message."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, f"not the error envelope: {body!r}"
        error = body["error"]
        assert set(error) == {"type", "message", "param"} and error["message"], f"not the error envelope: {body!r}"
    return True


@pytest.fixture(scope="module")
def fuzzed_gateway(pristine_index, tiny_engine, tmp_path_factory) -> Iterator[Server]:
    """One gateway for every generated case (admin adds and deletes accumulate, as on a live server)."""
    folder = tmp_path_factory.mktemp("fuzz")
    index = Path(shutil.copytree(pristine_index, folder / "index"))
    sasrec = write_sasrec_checkpoint(folder / "sasrec", make_catalog().ids())  # as `reasonrec serve` has one
    with private_prefix("fuzz") as prefix:
        settings = tiny_settings(index, redis_url=os.environ["REASONREC_TEST_REDIS_URL"], cache_prefix=prefix,
                                 max_inflight=64, sasrec_checkpoint=sasrec)
        server = start_server(settings, tiny_engine)
        started = time.monotonic()
        yield server
        seconds = time.monotonic() - started
        server.stop()
    if PROFILE == "long":
        record_figures(seconds)


def app_spec() -> dict:
    """The OpenAPI document of the app `reasonrec serve` builds (checked against the running server's below)."""
    return create_app(Settings(model="tiny")).openapi()


def fuzz_plan(spec: dict) -> list[tuple[str, str, GenerationMode]]:
    """(path, method, mode) for every operation: both modes, except negative for one without any input."""
    plan = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            has_input = bool(operation.get("parameters") or operation.get("requestBody"))
            plan += [(path, method, mode) for mode in GenerationMode if has_input or mode.is_positive]
    return plan


SPEC = app_spec()
SCHEMA = schemathesis.openapi.from_dict(SPEC)
PLAN = fuzz_plan(SPEC)


def test_the_fuzzed_spec_is_the_running_servers(fuzzed_gateway: Server) -> None:
    live = fuzzed_gateway.client.get("/openapi.json").json()
    assert live == SPEC and len({(path, method) for path, method, _ in PLAN}) == 9


@pytest.mark.parametrize(("path", "method", "mode"), PLAN, ids=[f"{m.upper()} {p} {g.value}" for p, m, g in PLAN])
def test_every_generated_request_is_answered_by_the_contract(fuzzed_gateway: Server, path: str, method: str,
                                                             mode: GenerationMode) -> None:
    """`mode`: requests that fit the schema (positive) or break it somewhere (negative)."""

    strategy = SCHEMA[path][method].as_strategy(mode)
    @given(case=strategy.map(with_catalog_ids) if mode.is_positive else strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=PROFILE == "short",
              suppress_health_check=list(HealthCheck))
    def answered_by_contract(case: schemathesis.Case) -> None:
        if case.path.startswith("/admin/"):
            case.headers = {**(case.headers or {}), "authorization": f"Bearer {ADMIN_TOKEN}"}
        response = case.call(base_url=fuzzed_gateway.url, timeout=60)
        TALLY[f"{case.method.upper()} {case.path} {response.status_code}"] += 1
        TALLY["server_errors"] += response.status_code >= 500
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                 response_schema_conformance, error_envelope])

    answered_by_contract()


def catalog_id(value: object) -> str:
    """One of the tiny catalog's ids ("1".."36"), chosen by the generated value (deterministic)."""
    return str(1 + zlib.crc32(repr(value).encode()) % CATALOG_SIZE)


def with_catalog_ids(case: schemathesis.Case) -> schemathesis.Case:
    """Positive cases the server can answer with 200: item ids the catalog has (random strings are nearly always
    unknown ids), one reference per history entry (the schema cannot say "exactly one of") and a reasoning budget
    under the server's cap. Without this the ranking and rating paths would hardly ever run to their answers."""
    body = case.body
    if isinstance(body, dict) and case.path in ("/recommend", "/rate"):
        for entry in body.get("history") or []:
            if "item_id" in entry or "title" not in entry:
                entry["item_id"] = catalog_id(entry.get("item_id"))
                entry.pop("title", None)
        if "item_id" in body:
            body["item_id"] = catalog_id(body["item_id"])
        if isinstance(body.get("max_reasoning_tokens"), int):
            body["max_reasoning_tokens"] = 1 + body["max_reasoning_tokens"] % REASONING_CAP
    if case.path == "/items/{item_id}" and case.path_parameters:
        case.path_parameters["item_id"] = catalog_id(case.path_parameters["item_id"])
    return case


def record_figures(seconds: float) -> None:
    by_operation: dict[str, Counter[str]] = {}
    for key, count in TALLY.items():
        if key != "server_errors":
            operation, status = key.rsplit(" ", 1)
            by_operation.setdefault(operation, Counter())[status] += count
    record("fuzz", {
        "profile": PROFILE, "examples_per_run": EXAMPLES, "runs": len(PLAN),
        "cases": sum(sum(statuses.values()) for statuses in by_operation.values()),
        "server_errors": TALLY["server_errors"],
        "operations": {op: dict(sorted(statuses.items())) for op, statuses in sorted(by_operation.items())},
        "seconds": round(seconds, 1),
    })
