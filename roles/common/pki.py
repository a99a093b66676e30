"""The platform's private CA and each host's certificate, kept with the inventory.

The deploy (either tool, through the lookup ``grimbots_pki`` of this role) creates the CA the first
time it is needed and issues each host a key and a certificate for its private names and
addresses. Everything lives in the inventory's ``pki/`` folder: ``ca.crt`` and ``hosts/<host>.crt``
in clear, ``ca.key`` and ``hosts/<host>.key`` as PKCS#8 encrypted with the vault's
``common_tls_key_passphrase``: the CA key never leaves the control machine and no key sits on
disk in clear. A certificate is issued again when it is missing, names other names or addresses,
was not signed by the current CA, or expires within ``renew_days``: a rerun renews it.
One lock file serialises Ansible's forks (and concurrent runs) on the folder.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CA_NAME = "GrimBots platform CA"


class PkiError(RuntimeError):
    """A pki folder the deploy cannot use; the message says what to fix."""


@dataclass(frozen=True)
class Issued:
    ca_certificate: str
    certificate: str
    key: str  # PEM, in clear: for the host's file (mode 0640), never written on the controller

    def as_dict(self) -> dict[str, str]:
        return {
            "ca_certificate": self.ca_certificate,
            "certificate": self.certificate,
            "key": self.key,
        }


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole file or nothing: a run killed mid-write leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _encrypted(key: ec.EllipticCurvePrivateKey, passphrase: str) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )


def _load_key(path: Path, passphrase: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase.encode())
    except (ValueError, TypeError) as exc:
        raise PkiError(
            f"{path} does not open with common_tls_key_passphrase (changed in the vault?): {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC key")
    return key


def _ca(folder: Path, passphrase: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    if cert_path.exists() != key_path.exists():
        raise PkiError(f"{folder}: ca.crt and ca.key go together; one of them is missing")
    if cert_path.exists():
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), _load_key(
            key_path, passphrase
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _encrypted(key, passphrase), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _alt_names(names: Iterable[str], addresses: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names, then IP addresses; an "address" that is no IP (a molecule container's
    ansible_host is its name) is a DNS name. An IP address is also written as a DNS name:
    pgBackRest 2.45 (roles/pgbackrest) compares the address it connects to with the DNS names
    and the common name only, never the IP entries (clients that check IPs still find them)."""
    out: dict[x509.GeneralName, None] = {x509.DNSName(str(n)): None for n in names}
    for a in map(str, addresses):
        with suppress(ValueError):
            out[x509.IPAddress(ipaddress.ip_address(a))] = None
        out[x509.DNSName(a)] = None
    return list(out)


def _current(
    cert: x509.Certificate, ca: x509.Certificate, wanted: list[x509.GeneralName], renew_days: int
) -> bool:
    """Still right: issued by this CA, for exactly these names, not due for renewal."""
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 - a certificate in any doubt is issued again
        return False
    left = cert.not_valid_after_utc - _now()
    return set(sans) == set(wanted) and left > datetime.timedelta(days=renew_days)


def issue(
    folder: str | Path,
    host: str,
    passphrase: str,
    names: Iterable[str],
    addresses: Iterable[str],
    days: int = 365,
    renew_days: int = 60,
) -> Issued:
    """The CA's certificate and ``host``'s certificate and key (issued now if due)."""
    folder = Path(folder)
    if not passphrase:
        raise PkiError("common_tls_key_passphrase is empty: set it in the vault")
    if not 0 < int(renew_days) < int(days):
        raise PkiError(f"renew_days ({renew_days}) must be above 0 and below days ({days})")
    wanted = _alt_names(names, addresses)
    with _locked(folder):
        ca, ca_key = _ca(folder, passphrase)
        cert_path = folder / "hosts" / f"{host}.crt"
        key_path = folder / "hosts" / f"{host}.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = _load_key(key_path, passphrase)
            if not _current(cert, ca, wanted, int(renew_days)):
                cert = _sign(host, key, wanted, ca, ca_key, int(days))
                _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _sign(host, key, wanted, ca, ca_key, int(days))
            _write(key_path, _encrypted(key, passphrase), 0o600)
            _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    clear = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(
        ca.public_bytes(serialization.Encoding.PEM).decode(),
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        clear.decode(),
    )


def _sign(
    host: str,
    key: ec.EllipticCurvePrivateKey,
    wanted: list[x509.GeneralName],
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
) -> x509.Certificate:
    now = _now()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        # Server and client: the same certificate proves a host to its peers both ways (mTLS).
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
