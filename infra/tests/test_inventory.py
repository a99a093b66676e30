"""The inventory as ansible-core reads it, for the pyinfra side."""

import pytest

from grimbots_infra.inventory import ROOT, Inventory, InventoryError, platform_ports
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.render import render

LAB = ROOT / "inventory" / "lab"


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


def test_vault_values_and_role_defaults_resolve(lab):
    variables = lab.vars("db1")
    assert len(variables["patroni_superuser_password"]) >= 16
    assert variables["patroni_restapi_port"] == variables["platform_ports"]["patroni_rest"] == 8008
    assert variables["common_apt_update_cache"] is False  # the inventory beats the role default


def test_play_vars_take_precedence_and_may_be_templates(lab):
    password = "{{ hostvars[groups['db'][0]].patroni_app_password }}"
    variables = lab.vars("app1", {"grimbots_database_password": password + "x"})
    assert variables["grimbots_database_password"] == lab.vars("db1")["patroni_app_password"] + "x"


def test_templates_render_with_ansibles_templar(lab):
    text = render("patroni", "dynamic.yml.j2", lab.vars("db1"))
    assert "ttl: 20\nloop_wait: 4\nretry_timeout: 8\n" in text


def test_a_missing_inventory_is_a_clear_error(tmp_path):
    with pytest.raises(InventoryError, match="does not exist"):
        Inventory(tmp_path / "nope", ["common"])


def test_an_inventory_without_hosts_is_a_clear_error(tmp_path):
    (tmp_path / "hosts.yml").write_text("all: {}\n")
    with pytest.raises(InventoryError, match="has no hosts"):
        Inventory(tmp_path, ["common"])


def test_platform_ports_are_the_platform_defaults_for_an_inventory_file(tmp_path):
    # As the molecule tests pass molecule's inventory file.
    hosts = tmp_path / "ansible_inventory.yml"
    hosts.write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n")
    ports = platform_ports(str(hosts))
    assert ports["patroni_rest"] == 8008 and ports["redis_cluster"] == [7001, 7002]


def test_a_missing_vault_password_file_is_a_clear_error():
    with pytest.raises(InventoryError, match="vault password file"):
        Inventory(LAB, ["common"], LAB / "no-such-password.txt")


def test_the_app_env_follows_the_platform_phase_from_the_inventory(lab):
    single = render("app", "grimbots.env.j2", lab.vars("app1", {"platform_phase": 2}))
    assert "GRIMBOTS_REDIS_MODE=single\n" in single and "GRIMBOTS_SENTINELS" not in single
    assert "GRIMBOTS_QUEUE_MIN_REPLICAS=0\n" in single
    # The front door on app1 (127.0.0.1), then lb1 (from the lb group).
    assert "GRIMBOTS_TRUSTED_PROXIES=127.0.0.1,10.77.0.10\n" in single
    assert "GRIMBOTS_PUBLIC_URL=https://app1\n" in single
    # The database settings are database.env's alone (switched only after the data moved).
    assert "GRIMBOTS_DATABASE_URL" not in single and "PGPASSWORD" not in single
    text = render("app", "grimbots.env.j2", lab.vars("app1", {"platform_phase": 3}))
    nodes = "10.77.0.31:7001,10.77.0.32:7001,10.77.0.33:7001"
    assert f"GRIMBOTS_REDIS_CLUSTER_NODES={nodes}\n" in text
    sentinels = "10.77.0.31:26379,10.77.0.32:26379,10.77.0.33:26379"
    assert f"GRIMBOTS_SENTINELS={sentinels}\nGRIMBOTS_SENTINEL_MASTER=grimbots-queue\n" in text
    assert "GRIMBOTS_QUEUE_MIN_REPLICAS=1\n" in text
    assert "GRIMBOTS_PUBLIC_URL=https://10.77.0.10\n" in text
    assert lab.vars("app1", {"platform_phase": 3})["grimbots_local_redis"] is False


def test_every_app_host_is_on_sqlite_in_phase_1_and_on_postgresql_from_phase_2(lab):
    phase1 = render("app", "database.env.j2", lab.vars("app1", {"platform_phase": 1}))
    assert (
        phase1.splitlines()[-1] == "GRIMBOTS_DATABASE_URL=sqlite:////var/lib/grimbots/grimbots.db"
    )
    assert "\nPGPASSWORD=" not in phase1
    password = lab.vars("db1")["patroni_app_password"]
    url = "postgresql://grimbots@10.77.0.21:5432,10.77.0.22:5432,10.77.0.23:5432/grimbots?"
    for name, phase in (("app1", 2), ("app2", 3)):  # the first host (moved) and a host added later
        variables = lab.vars(name, {"platform_phase": phase})
        text = render("app", "database.env.j2", variables)
        assert f"\nGRIMBOTS_DATABASE_URL={variables['platform_database_url']}\n" in text
        assert variables["platform_database_url"].startswith(url)
        assert len(password) >= 16 and text.endswith(f"\nPGPASSWORD={password}\n")
        assert variables["app_database_backend"] == "postgresql"
    assert lab.vars("app1", {"platform_phase": 1})["app_database_backend"] == "sqlite"
