"""Fuzzing the documented API with schemathesis, against a real `tallykey serve`.

The server is the demo (seeded through the CLI) and the fuzzer authenticates with the
admin's personal token (it holds `tokens:manage`). Every generated request goes to
127.0.0.1 only. Checks: no 5xx, every status code documented, every body (errors too)
matches its documented schema, documented headers and content types, and requests that
break the schema are refused. The stateful run follows the links schemathesis infers
(create a token, then read, edit, rotate and revoke it).

The fuzzer may do anything an administrator may, so a guard keeps it from locking itself
out: it never targets its own token or its own user, never sets an account-wide IP
allow-list (which would refuse 127.0.0.1), and archives only a decoy workspace (the
stateful run reads workspace ids from `GET /api/v1/workspaces`, which must not run dry).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Server, running_server

#: Per operation, mode and backend: about 20 operations x 2 modes x 2 backends.
EXAMPLES_PER_OPERATION = 32
STATEFUL_RUNS = 30
STATEFUL_STEPS = 10
MINIMUM_CASES = 1000

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck))

#: Generated cases per backend (at least MINIMUM_CASES each, checked at the end).
generated: dict[str, int] = {}


class Target:
    """The server under test and what the guard must protect."""

    def __init__(self, server: Server, backend: str) -> None:
        self.server = server
        self.backend = backend
        token = server.seeded["admin"]["token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base_url, headers=self.headers, timeout=10) as http:
            info = http.get("/core/v3/info").json()
            self.own_token_id: str = info["token"]["id"]
            self.own_user_id: str = info["user"]["id"]
            users = http.get("/api/v1/users").json()
            self.other_user_id = next(u["id"] for u in users if u["id"] != self.own_user_id)
            decoy = http.post("/api/v1/tokens", json={"name": "decoy", "expires_in_days": 30})
            assert decoy.status_code == 201, decoy.text
            self.decoy_token_id: str = decoy.json()["id"]
            spare = http.post("/api/v1/workspaces", json={"slug": "decoy", "name": "Decoy"})
            assert spare.status_code == 201, spare.text
            self.decoy_workspace_id: str = spare.json()["id"]
        self.statuses: Counter[int] = Counter()

    def seen(self, status: int) -> None:
        self.statuses[status] += 1

    def guard(self, case: schemathesis.Case[Any]) -> None:
        """Keep the fuzzer from revoking, rotating or narrowing its own credentials."""
        generated[self.backend] = generated.get(self.backend, 0) + 1
        parameters = case.path_parameters or {}
        if parameters.get("token_id") == self.own_token_id:
            parameters["token_id"] = self.decoy_token_id
        if parameters.get("user_id") == self.own_user_id:
            parameters["user_id"] = self.other_user_id
        if "workspace_id" in parameters and case.method.upper() == "DELETE":
            parameters["workspace_id"] = self.decoy_workspace_id
        positive = case.meta is None or case.meta.generation.mode.is_positive
        if positive and case.method.upper() == "PATCH" and case.path == "/api/v1/account" \
                and isinstance(case.body, dict) and case.body.get("ip_allowlist"):
            case.body["ip_allowlist"] = []  # (a schema-breaking body is refused anyway)


def leak_report_keys() -> str:
    """A reporter key, so that `POST /api/v1/leaks` is live (unset, it answers 503) and
    the fuzzer meets its signature checks."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return json.dumps({"fuzz-reporter": pem})


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with running_server(tmp, request.param,
                        TALLYKEY_LEAK_REPORT_KEYS=leak_report_keys()) as server:
        yield Target(server, request.param)


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    schema = schemathesis.openapi.from_url(f"{target.server.base_url}/openapi.json")
    # The fuzzer authenticates with its own token (`Target.headers`); the documented
    # security schemes (for Swagger UI's "Authorize") are not parameters to fuzz.
    schema.config.generation.update(with_security_parameters=False)
    return schema


def fuzz(operation: Any, mode: GenerationMode, target: Target) -> None:
    """`EXAMPLES_PER_OPERATION` cases of one operation in one mode; raises the first
    failure (shrunk by Hypothesis)."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        target.guard(case)
        response = case.call_and_validate(headers=target.headers, checks=CHECKS, timeout=30)
        target.seen(response.status_code)

    run()


def test_every_operation_answers_as_documented(api_schema: Any, target: Target) -> None:
    """Each documented operation, with valid and with schema-breaking input. (Not
    `schemathesis.pytest`: its fixture loader does not run on pytest 9.2.)"""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15, [o.label for o in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, target)
            except Unsatisfiable:
                pass  # nothing to break: no body, no query, only a free-text path id
            except Exception as failure:  # every failure is reported below
                failures.append(f"{operation.label} [{mode.value}]: {failure}")
    assert not failures, "\n\n".join(failures)


def test_stateful_sequences_answer_as_documented(api_schema: Any, target: Target) -> None:
    """Sequences along the links schemathesis infers (a created token's id feeds the
    read, edit, rotate and revoke calls). The server's state changes under the run, so a
    failure is recorded, not replayed and shrunk (a replay would meet another state)."""
    failures: list[str] = []
    # Left to the per-operation run: operations whose answer to the same input flips after
    # the first call (archiving a workspace, creating one with a given slug, the operator
    # API's per-address throttle), which a replayed sequence cannot reproduce.
    machine = (api_schema.exclude(tag="operator")
               .exclude(method="DELETE", path="/api/v1/workspaces/{workspace_id}")
               .exclude(method="POST", path="/api/v1/workspaces")
               .as_state_machine())

    class Guarded(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: schemathesis.Case[Any]) -> None:
            target.guard(case)

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"headers": target.headers, "timeout": 30}

        def validate_response(self, response: Any, case: schemathesis.Case[Any],
                              **kwargs: Any) -> None:
            target.seen(response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:  # every failure is reported below
                failures.append(f"{case.method} {case.formatted_path}: {failure}")

    Guarded.run(settings=settings(max_examples=STATEFUL_RUNS, deadline=None,
                                  derandomize=True, database=None,
                                  stateful_step_count=STATEFUL_STEPS,
                                  phases=[Phase.generate],
                                  suppress_health_check=list(HealthCheck)))
    assert not failures, "\n\n".join(failures[:10])


def test_the_fuzzer_ran_enough_cases(target: Target) -> None:
    """Runs after the operations of its backend (same module fixture)."""
    total = generated.get(target.backend, 0)
    print(f"schemathesis: {total} cases on {target.backend}; answers by status: "
          f"{dict(sorted(target.statuses.items()))}")
    assert total >= MINIMUM_CASES, total


def test_nul_characters_anywhere_are_refused_not_a_crash(target: Target) -> None:
    """PostgreSQL text cannot hold U+0000; the fuzzer rarely draws one, so every string
    parameter and body field of every operation gets one on purpose."""
    crashed: list[str] = []
    with httpx.Client(base_url=target.server.base_url, headers=target.headers,
                      timeout=30) as http:
        document = http.get("/openapi.json").json()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                names = [(p["in"], p["name"]) for p in operation.get("parameters", [])]
                names += [("body", "")] if "requestBody" in operation else []
                for where, name in names:
                    url = path.replace("{token_id}", target.decoy_token_id).replace(
                        "{user_id}", target.other_user_id)
                    params: dict[str, str] = {}
                    body: Any = None
                    if where == "path":
                        url = url.replace(target.decoy_token_id, "a%00b").replace(
                            target.other_user_id, "a%00b")
                    elif where == "query":
                        params[name] = "a\x00b"
                    elif where == "body":
                        body = {"name": "x\x00", "email": "a\x00@example.com",
                                "workspace": "\x00", "target": "\x00", "reason": "\x00"}
                    else:
                        continue
                    answer = http.request(method.upper(), url, params=params, json=body)
                    if answer.status_code >= 500:
                        crashed.append(f"{method.upper()} {path} ({where} {name}): "
                                       f"{answer.status_code}")
    assert not crashed, crashed
