"""Phase 1 /health: 200 with every check ok, from the controller through the lab network."""

from conftest import http


def test_health_answers_200_with_every_check_ok(app_url, app_host, app_vars):
    status, body = http("GET", f"{app_url}/health")
    assert status == 200, body
    assert body["status"] == "ok"
    failing = {name: check for name, check in body["checks"].items() if not check["ok"]}
    assert not failing, failing
    assert set(body["checks"]) >= {"database", "redis", "rq"}
    # SQLite in phase 1; PostgreSQL once phase 2 moved the data (re-running phase 1 keeps it).
    env = app_host.file(f"{app_vars['grimbots_config_dir']}/database.env").content_string
    backend = "postgresql" if "\nGRIMBOTS_DATABASE_URL=postgresql" in env else "sqlite"
    assert body["checks"]["database"]["backend"] == backend


def test_metrics_are_served_as_prometheus_text(app_url):
    status, text = http("GET", f"{app_url}/metrics")
    assert status == 200
    assert "# TYPE" in str(text)
