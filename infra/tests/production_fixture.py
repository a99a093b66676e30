"""Test helpers: inventory/production loaded with the test-only example vault, and the preflight
plan of each phase as its playbook's first play runs it (which roles on which hosts)."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

import yaml

from grimbots_infra import phases, preflight
from grimbots_infra.inventory import ROLES_DIR, ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.render import render

PRODUCTION = ROOT / "inventory" / "production"
EXAMPLE_VAULT = PRODUCTION / "group_vars" / "all" / "vault.yml.example"
# The example's control-machine address (documentation range) and the test operator's.
EXAMPLE_ADMIN = "198.51.100.7"
OPERATOR_ADMIN = "10.8.0.2"
TEST_VAULT = Path(__file__).parent / "fixtures" / "production-vault.test.yml"
# TEST ONLY: the password the test vault is encrypted with (never a real vault's).
TEST_VAULT_PASSWORD = "TEST-ONLY-vault-password"
FRONT_DOOR = ("app", "lb")
# Which roles each group's hosts get: every template of a role is rendered for those hosts.
ROLE_GROUPS = {
    "common": ("app", "db", "lb", "redis", "monitoring"),
    "app": ("app",),
    "patroni": ("db",),
    "haproxy": ("lb", "app"),  # the front door: the first app host in phases 1-2
    "redis_cluster": ("redis",),
    "queue_redis": ("redis",),
    "exporters": ("app", "db", "lb", "redis", "monitoring"),
    "monitoring": ("monitoring",),
    "pgbackrest": ("db", "backup"),
}


def make_certificate(days: int = 30) -> tuple[str, str]:
    """A throwaway self-signed certificate and key for the public name (TEST ONLY); ``days`` < 0
    gives one that has expired."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bots.example.net")])
    now = datetime.datetime.now(datetime.UTC)
    start, end = sorted((now - datetime.timedelta(days=60), now + datetime.timedelta(days=days)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def example_vault() -> dict[str, Any]:
    """The test-only vault's values, with a freshly generated certificate and key."""
    values = yaml.safe_load(TEST_VAULT.read_text())
    cert, key = make_certificate()
    return {**values, "vault_haproxy_tls_certificate": cert, "vault_haproxy_tls_key": key}


def copy_production(dest: Path, edit_hosts=None, admin_source: str = OPERATOR_ADMIN) -> Path:
    """inventory/production copied to ``dest`` with the test vault encrypted as vault.yml (as an
    operator's is) and its password file beside it, and ``admin_source`` in place of the
    example's documentation address (as docs/production.md asks the operator); ``edit_hosts``
    may rewrite hosts.yml."""
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    shutil.copytree(PRODUCTION, dest)
    main = dest / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text().replace(EXAMPLE_ADMIN, admin_source))
    if edit_hosts:
        hosts = dest / "hosts.yml"
        hosts.write_text(edit_hosts(hosts.read_text()))
    secret = VaultSecret(TEST_VAULT_PASSWORD.encode())
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, secret)])
    text = yaml.safe_dump(example_vault(), default_flow_style=False)
    (dest / "group_vars" / "all" / "vault.yml").write_bytes(vault.encrypt(text))
    (dest / "vault-password.txt").write_text(TEST_VAULT_PASSWORD + "\n")
    return dest


def load(path: Path) -> Inventory:
    return Inventory(path, list(ALL_ROLES), path / "vault-password.txt")


def fake_wheels(path: Path) -> Path:
    """A wheel set's shape (a stamp, one grimbots wheel): preflight checks it exists, no more."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".stamp").write_text("test-only\n")
    (path / "grimbots-0.0.0-py3-none-any.whl").touch()
    return path


def problems(inventory: Inventory, phase: int, play_vars: dict[str, Any]) -> list[str]:
    """Every problem phase ``phase``'s preflight plays find (its own, then those of the phase
    playbooks it imports), each phase guard first, on every host of the play: the roles the
    playbook's plays apply to each (as the lookup plugin)."""
    out: list[str] = []
    for number, groups in phases.preflight_plays(phase):
        for host in dict.fromkeys(h for g in groups for h in inventory.group(g)):
            variables = inventory.vars(host, play_vars)
            roles = phases.host_roles(number, variables["group_names"], variables.templar)
            out += preflight.check(roles, preflight.from_host_vars(variables), phase=number)
    return list(dict.fromkeys(out))


def render_all(inventory: Inventory, phase: int, play_vars: dict[str, Any]) -> dict[str, str]:
    """Every template of every role, rendered for every host of the role's groups."""
    out = {}
    for role, groups in ROLE_GROUPS.items():
        for host in [h for g in groups for h in inventory.group(g)]:
            variables = inventory.vars(host, {**play_vars, "platform_phase": phase})
            for template in sorted((ROLES_DIR / role / "templates").glob("*.j2")):
                out[f"{role}/{template.name} on {host}"] = render(role, template.name, variables)
    return out
