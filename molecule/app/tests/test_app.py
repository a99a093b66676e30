"""The app role on one host: services, worker queues, file modes, Redis bound, health."""

import json
import os

import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_contract

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")

# The platform contract's ports and paths as the converge got them (molecule's inventory).
CONTRACT = platform_contract(os.environ["MOLECULE_INVENTORY_FILE"])
PORTS = CONTRACT["platform_ports"]
CONFIG_DIR, DATA_DIR = CONTRACT["platform_app_config_dir"], CONTRACT["platform_app_data_dir"]

INSTANCES = ["tasks-1", "tasks-2", "gateway-1", "webhook-1"]


def test_web_and_every_worker_instance_run_and_are_enabled(host):
    assert host.service("grimbots-web").is_running
    assert host.service("grimbots-web").is_enabled
    for instance in INSTANCES:
        unit = host.service(f"grimbots-worker@{instance}")
        assert unit.is_running, instance
        assert unit.is_enabled, instance


def test_each_worker_serves_its_queue_not_its_instance_name(host):
    for instance in INSTANCES:
        pid = host.check_output(f"systemctl show -p MainPID --value grimbots-worker@{instance}")
        argv = host.file(f"/proc/{pid}/cmdline").content_string.rstrip("\0").split("\0")
        queue = instance.rsplit("-", 1)[0]
        assert argv[-2:] == ["worker", queue], argv


def test_environment_file_is_readable_by_the_service_group_only(host):
    env = host.file(f"{CONFIG_DIR}/grimbots.env")
    assert (env.user, env.group, env.mode) == ("root", "grimbots", 0o640)
    assert host.file("/etc/redis/redis.conf").mode == 0o640


def test_local_redis_listens_on_loopback_with_a_bounded_client_count(host):
    assert host.socket(f"tcp://127.0.0.1:{PORTS['redis']}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORTS['redis']}").is_listening
    out = host.check_output(
        "REDISCLI_AUTH=molecule-redis-password-0123456789 redis-cli config get maxclients"
    )
    assert out.split()[-1] == "1000"


def test_health_answers_200_with_every_check_ok(host):
    out = host.check_output(
        "curl -s -o /tmp/health.json -w '%{http_code}' "
        f"http://127.0.0.1:{PORTS['app_web']}/health"
    )
    assert out == "200", host.file("/tmp/health.json").content_string
    body = json.loads(host.file("/tmp/health.json").content_string)
    assert body.get("status") in ("ok", "healthy"), body


def test_database_settings_are_private_and_installed_by_the_switch_helper(host):
    env = host.file(f"{CONFIG_DIR}/database.env")
    assert (env.user, env.group, env.mode) == ("root", "grimbots", 0o640)
    assert f"\nGRIMBOTS_DATABASE_URL=sqlite:///{DATA_DIR}/grimbots.db\n" in env.content_string
    assert host.file(f"{CONFIG_DIR}/database.env.next").content == env.content
    check = host.run(f"{CONTRACT['platform_lib_dir']}/grimbots-switch-database --check")
    assert check.rc == 0 and check.stdout.startswith("unchanged"), check.stdout + check.stderr
