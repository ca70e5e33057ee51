"""The offerings service answers the same on every architecture it is built for.

``multiarch_rest`` starts the service image's variant for ``arch`` (with its MariaDB) and hands
over a requests session bound to it; these tests run once per architecture.
"""


def test_healthy(multiarch_rest):
    answer = multiarch_rest.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_create_then_fetch(multiarch_rest):
    created = multiarch_rest.session.post(
        "/offerings", json={"name": "Kräutertee 🍵", "price": "12.5", "description": None}
    )
    assert created.status_code == 201
    offering = created.json()
    assert created.headers["Location"] == f"/offerings/{offering['id']}"
    assert offering == {
        "id": offering["id"],
        "name": "Kräutertee 🍵",
        "price": "12.50",
        "description": None,
    }
    assert multiarch_rest.get(created.headers["Location"]).json() == offering
    assert offering in multiarch_rest.get("/offerings").json()


def test_prices_stay_exact_decimals(multiarch_rest):
    for price, stored in [("0.1", "0.10"), ("9999999999.99", "9999999999.99"), ("7", "7.00")]:
        answer = multiarch_rest.session.post("/offerings", json={"name": "p", "price": price})
        assert answer.json()["price"] == stored


def test_float_prices_are_refused(multiarch_rest):
    answer = multiarch_rest.session.post("/offerings", json={"name": "x", "price": 0.1})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid offering"


def test_unknown_offering_is_404(multiarch_rest):
    answer = multiarch_rest.get("/offerings/987654321")
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"error": "offering not found"}


def test_every_arch_answers_like_the_reference_arch(multiarch_rest_fleet):
    """One question to amd64, arm64 and s390x at once: the answers must be the same."""
    order = {"name": "Rooibos", "price": "3.20", "description": "caffeine-free ✓"}
    created = multiarch_rest_fleet.assert_same("POST", "/offerings", json=order)
    location = next(iter(created.values())).headers["Location"]
    multiarch_rest_fleet.assert_same("GET", location)
    multiarch_rest_fleet.assert_same("GET", "/offerings")
    multiarch_rest_fleet.assert_same("GET", "/offerings/424242")


def test_answers_recorded_for_the_merge(multiarch_rest):
    """With one CI job per arch no process sees two archs: ``record`` keeps each answer in this
    job's shard, and ``pytest-multiarch merge`` compares them across the jobs' shards the way
    ``assert_same`` does (status, Content-Type, JSON structure, floats bit-exact)."""
    created = multiarch_rest.record(
        "POST", "/offerings", json={"name": "Rooibos", "price": "3.20", "description": "✓"}
    )
    assert created.status_code == 201
    multiarch_rest.record("GET", created.headers["Location"])
    multiarch_rest.record("GET", "/offerings/424242")
