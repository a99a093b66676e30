"""Phase 1 /health: 200 with every check ok, from the controller through the lab network."""

from conftest import http


def test_health_answers_200_with_every_check_ok(app_url):
    status, body = http("GET", f"{app_url}/health")
    assert status == 200, body
    assert body["status"] == "ok"
    failing = {name: check for name, check in body["checks"].items() if not check["ok"]}
    assert not failing, failing
    assert set(body["checks"]) >= {"database", "redis", "rq"}
    assert body["checks"]["database"]["backend"] == "sqlite"


def test_metrics_are_served_as_prometheus_text(app_url):
    status, text = http("GET", f"{app_url}/metrics")
    assert status == 200
    assert "# TYPE" in str(text)
