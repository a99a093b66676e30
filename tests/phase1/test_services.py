"""Phase 1 services: web and every worker instance run, are enabled, and serve the right queue."""

from conftest import http


def test_web_service_runs_and_starts_at_boot(app_host):
    web = app_host.service("grimbots-web")
    assert web.is_running
    assert web.is_enabled


def test_every_worker_instance_of_the_inventory_runs_and_starts_at_boot(app_host, worker_instances):
    assert (
        len(worker_instances) == 11
    )  # the lab keeps the default: tasks x5, gateway x3, webhook x3
    listed = app_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'grimbots-worker@*'"
    )
    active = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert active == {f"grimbots-worker@{i}.service" for i in worker_instances}
    for instance in worker_instances:
        assert app_host.service(f"grimbots-worker@{instance}").is_enabled, instance


def test_each_worker_process_serves_its_queue_not_its_instance_name(app_host, worker_instances):
    for instance in worker_instances:
        pid = app_host.check_output(
            f"systemctl show -p MainPID --value grimbots-worker@{instance}"
        ).strip()
        argv = app_host.file(f"/proc/{pid}/cmdline").content_string.rstrip("\0").split("\0")
        queue = instance.rsplit("-", 1)[0]
        assert argv[-2:] == ["worker", queue], f"{instance}: {argv}"


def test_health_counts_the_workers_of_each_queue(app_url, app_vars):
    status, body = http("GET", f"{app_url}/health")
    assert status == 200, body
    queues = body["checks"]["rq"]["queues"]
    for entry in app_vars["grimbots_workers"]:
        assert queues[entry["queue"]]["workers"] >= int(entry["count"]), queues
