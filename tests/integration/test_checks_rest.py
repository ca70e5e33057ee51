"""REST checks against the real test bed: the example's C service, built per arch, with MariaDB.

Needs the provisioned engine, registry and qemu handlers (scripts/provision-host); the example
images are built by example_project/build.sh on first use (cached afterwards).  Without the test
bed these tests fail, they do not skip.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from examples import build_example

from pytest_multiarch import ResponsesDiffer, ServiceUnavailable
from pytest_multiarch.checks.rest import RestService, compare_responses, rest_service
from pytest_multiarch.oci.resolve import open_source, resolve
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import LABEL_SESSION as SESSION_LABEL

pytestmark = pytest.mark.integration

REGISTRY = "127.0.0.1:5000"
SERVICE_IMAGE = f"{REGISTRY}/example/offerings:1.0"
DB_IMAGE = f"{REGISTRY}/example/base-mariadb:bookworm"
UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}

Pinned = Callable[[str, str], str]


@pytest.fixture(scope="module")
def pinned(engine: Any) -> Pinned:
    """``pinned(image, arch)``: the variant's ``repo@sha256:`` ref, after build.sh made sure the
    example images exist (a no-op when the registry has them from the same sources)."""
    build_example("build.sh")

    def pin(image: str, arch: str) -> str:
        source, ref = open_source(image, insecure_registries=[REGISTRY])
        return resolve(source, ref, Platform.parse(arch)).pinned

    return pin


def _start(engine: Any, pinned: Pinned, arch: str, session_id: str, **kw: Any) -> Any:
    return rest_service(
        engine,
        platform=f"linux/{arch}",
        service_image=pinned(SERVICE_IMAGE, arch),
        db_image=pinned(DB_IMAGE, arch),
        session_id=session_id,
        **kw,
    )


def _exercise(svc: RestService) -> dict[str, Any]:
    """The same requests, in the same order, on every arch; the responses by name."""
    return {
        "create": svc.post("/offerings", json={"name": "Kräutertee 🍵", "price": "12.5"}),
        "create_escaped": svc.post(
            "/offerings", json={"name": 'q"\\\n\u0001', "price": "0.01", "description": "d"}
        ),
        "reject_float_price": svc.post("/offerings", json={"name": "x", "price": 1.5}),
        "reject_malformed": svc.post("/offerings", data=b'{"name": '),
        "list": svc.get("/offerings"),
        "one": svc.get("/offerings/1"),
        "missing": svc.get("/offerings/424242"),
        "no_such_endpoint": svc.get("/nope"),
        "health": svc.get("/healthz"),
    }


@pytest.mark.parametrize("cpu", ["amd64", "arm64", "s390x"])
def test_service_answers_on_its_arch(
    engine: Any, pinned: Pinned, session_id: str, cpu: str
) -> None:
    with _start(engine, pinned, cpu, session_id) as svc:
        assert svc.platform == Platform.parse(cpu)
        uname = svc.container.exec(["uname", "-m"]).stdout.strip()
        assert uname == UNAME[cpu], "the service container runs another cpu than asked for"

        created = svc.post("/offerings", json={"name": "Tea 🍵", "price": "12.5"})
        assert created.status_code == 201, created.text
        assert created.headers["Content-Type"] == "application/json"
        assert created.headers["Location"] == f"/offerings/{created.json()['id']}"
        assert created.json() == {"id": 1, "name": "Tea 🍵", "price": "12.50", "description": None}
        assert list(created.json()) == ["id", "name", "price", "description"]

        assert svc.get(created.headers["Location"]).json() == created.json()
        assert svc.get("/offerings").json() == [created.json()]
        missing = svc.get("/offerings/99")
        assert missing.status_code == 404
        assert missing.json() == {"error": "offering not found"}
        assert svc.post("/offerings", json={"name": "x", "price": 1.5}).status_code == 400
        assert svc.post("/offerings", data=b"{" * 20000).status_code == 413
    assert svc.collected_logs, "logs are collected when the service goes away"
    assert any("POST /offerings -> 201" in text for text in svc.collected_logs.values())


def test_answers_agree_across_arches(engine: Any, pinned: Pinned, session_id: str) -> None:
    arches = ["amd64", "arm64", "s390x"]
    with ExitStack() as stack:
        services = {a: stack.enter_context(_start(engine, pinned, a, session_id)) for a in arches}
        answers = {a: _exercise(svc) for a, svc in services.items()}
        for name in answers["amd64"]:
            comparison = compare_responses({a: answers[a][name] for a in arches}, "amd64")
            assert comparison.ok, comparison.message

        # A real difference is found and named per arch: arm64 gets one more offering.
        services["arm64"].post("/offerings", json={"name": "extra", "price": "1"})
        lists = {a: services[a].get("/offerings") for a in arches}
        comparison = compare_responses(lists, reference_arch="amd64")
        assert comparison.differing_archs == ("arm64",)
        assert "arm64: $ length: 3 (on amd64: 2)" in comparison.message
        with pytest.raises(ResponsesDiffer, match=r"GET /offerings answers differently"):
            comparison.raise_for_differences()


@pytest.mark.parametrize("cpu", ["amd64", "arm64"])
def test_database_unreachable_gives_503_verdict(
    engine: Any, pinned: Pinned, session_id: str, cpu: str
) -> None:
    with _start(engine, pinned, cpu, session_id) as svc:
        svc.stop_database()
        with pytest.raises(ServiceUnavailable, match=rf"on linux/{cpu} answers 503") as excinfo:
            svc.check_health()
        assert "database unreachable" in str(excinfo.value)
        assert svc.database is not None
        assert svc.database.name in excinfo.value.logs
        # The service keeps running and keeps answering, with 503 and a JSON error.
        answer = svc.get("/offerings")
        assert answer.status_code == 503
        assert answer.json()["error"] == "database unreachable"
        assert svc.container.running()


def test_service_without_database_is_a_startup_verdict(
    engine: Any, pinned: Pinned, session_id: str
) -> None:
    with (
        pytest.raises(
            ServiceUnavailable, match=r"linux/arm64.*cannot reach its database"
        ) as excinfo,
        _start(engine, pinned, "arm64", session_id, with_database=False, ready_timeout=2),
    ):
        pass
    assert "503" in str(excinfo.value)


def test_interrupt_removes_containers(engine: Any, pinned: Pinned, session_id: str) -> None:
    with pytest.raises(KeyboardInterrupt), _start(engine, pinned, "amd64", session_id):
        raise KeyboardInterrupt
    flt = {"label": [f"{SESSION_LABEL}={session_id}"]}
    assert engine.containers.list(all=True, filters=flt, ignore_removed=True) == []
    assert engine.networks.list(filters=flt) == []
