"""query('grimbots_pki', HOST, pki_dir=..., passphrase=..., names=[...], addresses=[...], days=N,
renew_days=N): [{ca_certificate, certificate, key}] for HOST from the platform's private CA kept in
the inventory (roles/common/pki.py: created when absent, a certificate issued again when due).
pyinfra renders the common role's templates with the same lookup (the role's plugin folder is
loaded with the role), so both tools write the same files."""

from __future__ import annotations

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from grimbots_infra import roles

DOCUMENTATION = """
name: grimbots_pki
short_description: the private CA's certificate and a host's certificate and key
description:
  - Creates the CA in pki_dir when absent, issues the host's certificate when due, returns PEMs.
options:
  _terms:
    description: the host's inventory name
    required: true
  pki_dir:
    description: the inventory's pki folder
    required: true
  passphrase:
    description: the vault secret the keys are encrypted with
    required: true
  names:
    description: DNS names of the certificate
    type: list
  addresses:
    description: IP addresses of the certificate
    type: list
  days:
    description: validity of a host certificate
    type: int
  renew_days:
    description: issue again when fewer days are left
    type: int
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        pki = roles.module("common", "pki")
        try:
            return [
                pki.issue(
                    kwargs["pki_dir"],
                    str(host),
                    str(kwargs["passphrase"]),
                    kwargs.get("names") or [],
                    kwargs.get("addresses") or [],
                    int(kwargs.get("days", 365)),
                    int(kwargs.get("renew_days", 60)),
                ).as_dict()
                for host in terms
            ]
        except pki.PkiError as exc:
            raise AnsibleLookupError(str(exc)) from exc
