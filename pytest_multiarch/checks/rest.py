"""REST checks: a service container for one platform, its MariaDB on a private network, a real
HTTP readiness probe, and a structural comparison of answers across architectures.

    with rest_service(client, platform="linux/arm64", service_image=SVC_ARM64_PINNED,
                      db_image=DB_ARM64_PINNED, session_id="s1") as svc:
        svc.session.get("/offerings")          # a requests.Session bound to the base URL

    compare_responses({"amd64": r1, "arm64": r2}, reference_arch="amd64").raise_for_differences()

Images are passed pinned (``repo@sha256:<variant digest>``): engines key their local store by tag,
not platform, and would run another arch's cached image for a tag.  No pytest import here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from pytest_multiarch.checks.answers import (
    Answer,
    Comparison,
    Difference,
    compare_answers,
    compare_responses,
)
from pytest_multiarch.checks.engine import (
    Engine,
    Started,
    as_platform,
    ensure_running,
    labels,
    started_on,
    time_factor,
)
from pytest_multiarch.checks.mariadb import (
    DEFAULT_MEM_LIMIT,
    Account,
    MariaDBServer,
    Password,
    start_mariadb,
)
from pytest_multiarch.errors import CheckError, NotReady, ServiceUnavailable
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Deadline
from pytest_multiarch.runners.docker.container import EngineContainer

# Re-exported: the comparison moved to checks.answers; callers import it from here as before.
__all__ = ["Answer", "BaseUrlSession", "Comparison", "Difference", "RestFleet", "RestService",
           "compare_answers", "compare_responses", "rest_service"]

#: Native seconds for the service to answer its health probe with 200 (times the emulation factor).
READY_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0
SERVICE_MEM_LIMIT = "256m"
DB_ALIAS = "db"
DB_NAME = "offerings"


class BaseUrlSession(requests.Session):
    """A ``requests.Session`` that resolves paths (``"/offerings"``) against ``base_url``."""

    def __init__(self, base_url: str, timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, str) and url.startswith("/"):
            url = self.base_url + url
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


@dataclass(slots=True)
class RestService:
    """A running service for one platform.  ``collected_logs`` is filled when the context exits."""

    platform: Platform
    image: str
    container: EngineContainer
    base_url: str
    session: BaseUrlSession
    database: MariaDBServer | None
    time_factor: float
    health_path: str = "/healthz"
    ready_seconds: float = 0.0
    collected_logs: dict[str, str] = field(default_factory=dict)
    #: answers normalized by :meth:`record`, in order; the plugin stores them in the report
    recorded: list[Answer] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return self.platform.architecture

    def describe(self) -> str:
        return f"service {self.image} on {self.platform}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(path, json=json, **kwargs)

    def record(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send the request and keep its normalized answer (status, Content-Type, body) for
        ``pytest-multiarch merge``, which compares it with other machines' answers like
        ``assert_same`` does. Returns the response."""
        resp = self.session.request(method, path, **kwargs)
        self.recorded.append(Answer.from_response(resp, f"{method.upper()} {path}"))
        return resp

    def logs(self) -> dict[str, str]:
        """Current logs of the service and its database (name -> text)."""
        found = {self.container.name: self.container.logs()}
        if self.database is not None:
            found[self.database.name] = self.database.logs()
        return found

    def stop_database(self) -> None:
        """Stop the database container (to check how the service behaves without it)."""
        if self.database is None:
            raise CheckError(f"{self.describe()} was started without a database")
        self.database.stop()

    def check_health(self) -> requests.Response:
        """GET the health path; raise :class:`ServiceUnavailable` on 503, :class:`CheckError` on
        anything else but 200."""
        resp = self.get(self.health_path)
        if resp.status_code == 200:
            return resp
        db = self.database.describe() if self.database else "no database container"
        if resp.status_code == 503:
            raise ServiceUnavailable(
                f"{self.describe()} answers 503 on GET {self.health_path}: {_error_text(resp)}; "
                f"its database ({db}) is unreachable. Hint: check that the database container "
                "runs and that the service's DB host/port/credentials point at it",
                self.logs(),
            )
        raise CheckError(
            f"{self.describe()} answers {resp.status_code} on GET {self.health_path}: "
            f"{_error_text(resp)}. Hint: read the service log",
            self.logs(),
        )


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or "<empty body>"
    if isinstance(body, dict) and "error" in body:
        return ": ".join(str(body[k]) for k in ("error", "detail") if body.get(k))
    return json.dumps(body)[:300]


@dataclass(frozen=True, slots=True)
class _ServiceSpec:
    """How the service is started: its image, port, environment and limits."""

    image: str
    port: int
    health_path: str
    env_prefix: str
    extra_env: Mapping[str, str]
    mem_limit: str

    def env(self, password: str) -> dict[str, str]:
        p = self.env_prefix
        return {
            f"{p}DB_HOST": DB_ALIAS, f"{p}DB_PORT": "3306", f"{p}DB_USER": "service",
            f"{p}DB_PASSWORD": password, f"{p}DB_NAME": DB_NAME,
            f"{p}LISTEN_PORT": str(self.port), **self.extra_env,
        }


@contextmanager
def rest_service(
    engine: Engine,
    *,
    platform: Platform | str,
    service_image: str,
    db_image: str,
    session_id: str | None = None,
    db_platform: Platform | str | None = None,
    emulation_factor: float | None = None,
    with_database: bool = True,
    require_healthy: bool = True,
    ready_timeout: float = READY_TIMEOUT,
    service_port: int = 8080,
    health_path: str = "/healthz",
    env_prefix: str = "OFFERINGS_",
    extra_env: Mapping[str, str] | None = None,
    mem_limit: str = SERVICE_MEM_LIMIT,
    db_mem_limit: str = DEFAULT_MEM_LIMIT,
) -> Iterator[RestService]:
    """Start the service for ``platform`` (and MariaDB for ``db_platform``, default the same) on
    a private labelled network, wait until ``GET health_path`` answers 200, yield the
    :class:`RestService`.

    *engine* is the platform's :class:`~pytest_multiarch.runners.docker.engine.EngineRunner` (or
    a Docker SDK client, wrapped in one for *session_id*).  The service learns its database from
    ``{env_prefix}DB_HOST``/``DB_PORT``/``DB_USER``/``DB_PASSWORD``/``DB_NAME`` and its port from
    ``{env_prefix}LISTEN_PORT``.  With ``with_database=False`` no database runs (the DB host does
    not resolve); with ``require_healthy=False`` any HTTP answer counts as ready.  Timeouts are
    native seconds times the emulation factor (measured by the caller; the runners' default when
    ``None``).  Containers and the network carry the session labels and are removed on exit,
    KeyboardInterrupt included.
    """
    plat = as_platform(platform)
    db_plat = as_platform(db_platform) if db_platform is not None else plat
    spec = _ServiceSpec(service_image, service_port, health_path, env_prefix,
                        dict(extra_env or {}), mem_limit)
    with started_on(engine, session_id) as started:
        network = started.network("rest", plat)
        password = Password.new()
        database = None
        if with_database:
            database = start_mariadb(
                started, image=db_image, platform=db_plat, network=network, alias=DB_ALIAS,
                role="db", time_factor=time_factor(started.runner, db_plat, emulation_factor),
                accounts=[Account("service", password, (f"ALL ON `{DB_NAME}`.*",))],
                databases=[DB_NAME], mem_limit=db_mem_limit,
            )
        service = _start_service(started, spec, plat, network, password, database,
                                 time_factor(started.runner, plat, emulation_factor))
        started.keep_logs_in(service.collected_logs)
        try:
            service.ready_seconds = _wait_http(service, ready_timeout, require_healthy)
            yield service
        finally:
            service.session.close()


def _start_service(
    started: Started, spec: _ServiceSpec, plat: Platform, network: str, password: str,
    database: MariaDBServer | None, factor: float,
) -> RestService:
    """The service container, started on *network* and tracked by *started*."""
    container = started.add(started.runner.start(
        spec.image, plat, env=spec.env(password), ports=[spec.port], mem_limit=spec.mem_limit,
        name=started.container_name("service"), labels=labels("service", plat), network=network,
    ))
    base_url = f"http://{container.host}:{container.host_port(spec.port)}"
    return RestService(plat, spec.image, container, base_url,
                       BaseUrlSession(base_url, REQUEST_TIMEOUT * factor), database, factor,
                       spec.health_path)


def _wait_http(service: RestService, timeout: float, require_healthy: bool) -> float:
    budget = timeout * service.time_factor
    deadline = Deadline(budget)
    status: int | None = None
    last = "no answer yet"
    while True:
        ensure_running(service.container)
        try:
            resp = requests.get(
                service.base_url + service.health_path,
                timeout=max(1.0, min(REQUEST_TIMEOUT * service.time_factor, deadline.remaining)),
            )
            status, last = resp.status_code, f"{resp.status_code} {_error_text(resp)}"
            if status == 200 or not require_healthy:
                return deadline.elapsed
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        if deadline.expired:
            _raise_not_ready(service, deadline, budget, timeout, status, last)
        time.sleep(0.3)


def _raise_not_ready(service: RestService, deadline: Deadline, budget: float, timeout: float,
                     status: int | None, last: str) -> None:
    where = (
        f"{service.describe()}: GET {service.health_path} did not answer 200 within "
        f"{deadline.elapsed:.1f}s (timeout {budget:.0f}s = {timeout:.0f}s x emulation "
        f"factor {service.time_factor:g}); last answer: {last}"
    )
    if status == 503:
        raise ServiceUnavailable(
            f"{where}. Hint: the service runs but cannot reach its database "
            f"({service.database.describe() if service.database else 'none started'})",
            service.logs(),
        )
    raise NotReady(
        f"{where}. Hint: read the service log; under qemu-user a slow start may need a "
        "larger emulation factor",
        service.logs(),
    )


@dataclass(slots=True)
class RestFleet:
    """The same service running on several archs at once, for asking all of them one question."""

    services: Mapping[str, RestService]
    reference_arch: str

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, requests.Response]:
        """Send the same request to every arch; answers keyed by arch name."""
        return {
            arch: svc.session.request(method, path, **kwargs)
            for arch, svc in self.services.items()
        }

    def compare(self, method: str, path: str, **kwargs: Any) -> Comparison:
        """Ask every arch and compare each answer with the reference arch's."""
        return compare_responses(self.request(method, path, **kwargs), self.reference_arch)

    def assert_same(self, method: str, path: str, **kwargs: Any) -> dict[str, requests.Response]:
        """Ask every arch; raise :class:`ResponsesDiffer` naming each arch that answers
        differently from the reference arch. Returns the answers."""
        answers = self.request(method, path, **kwargs)
        compare_responses(answers, self.reference_arch).raise_for_differences()
        return answers
