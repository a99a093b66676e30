"""The pgbackrest role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import guards
from grimbots_infra.preflight import Inputs, vault_password

CIPHERS = ("aes-256-cbc",)
RETENTION_TYPES = ("count", "time")


def _tls(inputs: Inputs) -> list[str]:
    """The CA parses; this host's certificate matches its key, is signed by that CA and carries
    pgbackrest_tls_name as its common name (the peers' tls-server-auth lets that name in)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.x509.oid import NameOID

    out = guards.certificate(inputs, "pgbackrest_tls_cert", "pgbackrest_tls_key")
    try:
        ca = x509.load_pem_x509_certificate(str(inputs.get("pgbackrest_tls_ca_cert", "")).encode())
    except ValueError:
        return out + [inputs.problem("pgbackrest_tls_ca_cert", "needs the CA's PEM certificate")]
    if out:
        return out
    leaf = x509.load_pem_x509_certificates(str(inputs["pgbackrest_tls_cert"]).encode())[0]
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        out.append(inputs.problem("pgbackrest_tls_cert", "is not signed by pgbackrest_tls_ca_cert"))
    names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [str(inputs.get("pgbackrest_tls_name", ""))]:
        out.append(
            inputs.problem(
                "pgbackrest_tls_cert",
                f"has common name {names} but pgbackrest_tls_name is "
                f"{inputs.get('pgbackrest_tls_name')!r}: they must agree",
            )
        )
    address = str(inputs.get("pgbackrest_address", ""))
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if address not in dns + names:
        out.append(
            inputs.problem(
                "pgbackrest_tls_cert",
                f"needs pgbackrest_address {address} as a DNS name in its subjectAltName "
                "(pgBackRest 2.45 checks the host it connects to against DNS names and the "
                "common name only, not IP entries)",
            )
        )
    return out


def check(inputs: Inputs) -> list[str]:
    """Every problem of one host's variables for this role; [] when it may be deployed."""
    out = []
    groups = inputs["groups"]
    repo_hosts = groups.get(inputs["pgbackrest_group"], [])
    db_hosts = groups.get(inputs["pgbackrest_db_group"], [])
    if len(repo_hosts) != 1:
        out.append(
            inputs.problem(
                "pgbackrest_group", f"must list exactly one backup host, not {repo_hosts}"
            )
        )
    in_both = sorted(set(repo_hosts) & set(db_hosts))
    if in_both:
        out.append(
            inputs.problem(
                "pgbackrest_group",
                f"{', '.join(in_both)} is also a db host: the repository must be off the db hosts",
            )
        )
    if not db_hosts:
        out.append(inputs.problem("pgbackrest_db_group", "the group lists no database hosts"))
    if inputs.host in repo_hosts:
        out += vault_password(inputs, "pgbackrest_cipher_pass")
        if inputs.get("pgbackrest_cipher_type") not in CIPHERS:
            out.append(inputs.problem("pgbackrest_cipher_type", "must be aes-256-cbc"))
        if inputs.get("pgbackrest_retention_full_type") not in RETENTION_TYPES:
            out.append(inputs.problem("pgbackrest_retention_full_type", "must be count or time"))
        for key in ("pgbackrest_retention_full", "pgbackrest_retention_diff"):
            if int(inputs.get(key, 0)) < 1:
                out.append(inputs.problem(key, "must keep at least one backup"))
    if inputs.host in db_hosts:
        wanted = f"pgbackrest --stanza={inputs['pgbackrest_stanza']} archive-push %p"
        if str(inputs.get("patroni_archive_command", "")) != wanted:
            out.append(
                inputs.problem(
                    "patroni_archive_command",
                    f"must be {wanted!r} on the db hosts pgBackRest backs up (WAL archiving)",
                )
            )
    out += _tls(inputs)
    return out + guards.own_private(inputs, "pgbackrest_address")
