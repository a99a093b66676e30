"""Phase 4 on the lab, backups watched (once, on the pyinfra pass: scripts/test-lab.sh stage
phase4-backup-watch). The backup host's collector (roles/pgbackrest, pgbackrest-metrics) reached
Prometheus through node_exporter: the newest backup's stop time there is the one `pgbackrest
info` lists (phase 2's suite took a full backup). Then the repository's archive is made
unreadable to the backup host's pgBackRest server: a switched WAL segment fails to archive,
WalArchivingFailing arrives at the fake Telegram, and the repair resolves it there. The times
are printed."""

from __future__ import annotations

import json
import time

import pytest

import grimbots_lab as lab2

PSQL = "runuser -u postgres -- psql -h /var/run/postgresql -XAtqc"
# A WAL record, then a segment switch: the archiver has a segment to push at once.
SWITCH = (
    f"{PSQL} 'CREATE TABLE IF NOT EXISTS backup_watch_probe (at timestamptz)' && "
    f"{PSQL} 'INSERT INTO backup_watch_probe VALUES (now())' && {PSQL} 'SELECT pg_switch_wal()'"
)


@pytest.fixture(scope="module")
def backup(lab) -> dict:
    name = lab.groups["backup"][0]
    host, v = lab.hosts[name], lab.vars(name)  # lazy: read only the keys used
    keys = ("pgbackrest_user", "pgbackrest_stanza", "pgbackrest_repo_path")
    return {
        "ansible_host": host["ansible_host"],
        "ansible_ssh_private_key_file": host["ansible_ssh_private_key_file"],
        **{k: v[k] for k in (*keys, "pgbackrest_metrics_interval", "pgbackrest_backup_max_age")},
    }


def _leader(lab) -> dict:
    names = lab2.leaders(lab2.wait_for(lambda: lab2.cluster(lab), timeout=30))
    assert len(names) == 1, names
    return lab.hosts[names[0]]


def _newest_stop(backup: dict) -> float:
    run = lab2.ssh(
        backup,
        f"runuser -u {backup['pgbackrest_user']} -- pgbackrest "
        f"--stanza={backup['pgbackrest_stanza']} --output=json info",
    )
    assert run.returncode == 0, run.stderr
    backups = json.loads(run.stdout)[0]["backup"]
    assert backups, "no backup in the repository: did phase 2's suite run?"
    return max(b["timestamp"]["stop"] for b in backups)


def test_the_newest_backup_is_in_prometheus_as_pgbackrest_lists_it(monitoring, backup):
    start = time.monotonic()
    stanza = backup["pgbackrest_stanza"]
    newest = _newest_stop(backup)
    expr = f'max(grimbots_pgbackrest_backup_last_timestamp_seconds{{job="node",stanza="{stanza}"}})'
    # The collector runs every pgbackrest_metrics_interval s, Prometheus scrapes every 15 s.
    bound = int(backup["pgbackrest_metrics_interval"]) + 30

    def seen():
        result = monitoring.query(expr)
        return result if result and float(result[0]["value"][1]) == newest else None

    assert lab2.wait_for(seen, timeout=bound, interval=3), (
        f"{expr} is not {newest} after {bound} s: {monitoring.query(expr)}"
    )
    age = time.time() - newest
    assert 0 <= age < int(backup["pgbackrest_backup_max_age"]), age
    healthy = monitoring.query(
        "grimbots_pgbackrest_info_success == 1 and on (instance) "
        "max by (instance) (grimbots_pgbackrest_backup_last_run_failed) == 0"
    )
    assert healthy, "the collector's pgbackrest info failed or a backup unit's last run failed"
    # The leader's archiver, from postgres_exporter (first scraped just after phase 4's deploy).
    archiver = lab2.wait_for(
        lambda: monitoring.query('pg_stat_archiver_last_archive_age{job="postgres"} >= 0'),
        timeout=bound,
        interval=3,
    )
    assert archiver, "no db member's pg_stat_archiver_last_archive_age (postgres_exporter)"
    print(
        f"\nBACKUP: newest backup {age:.0f} s old in Prometheus, as pgbackrest info lists it; "
        f"checked in {time.monotonic() - start:.1f} s"
    )


def test_archiving_broken_fires_at_the_fake_telegram_and_the_repair_resolves_it(
    lab, monitoring, backup
):
    leader = _leader(lab)
    archive = f"{backup['pgbackrest_repo_path']}/archive/{backup['pgbackrest_stanza']}"
    mode = lab2.ssh(backup, f"stat -c %a {archive}").stdout.strip()
    assert mode, f"no {archive} on the backup host"

    def arrived(since: float, resolved: bool):
        for m in monitoring.messages(since):
            text = m["text"] or ""
            done = "Resolved" in text or "RESOLVED" in text
            if "WalArchivingFailing" in text and done == resolved:
                return m
        return None

    broken = time.time()
    try:
        # The server (as postgres) can no longer read archive.info: every archive-push fails
        # at once, as with a stopped server, without waiting for its connect timeout.
        assert lab2.ssh(backup, f"chmod 000 {archive}").returncode == 0
        switched = lab2.ssh(leader, SWITCH)
        assert switched.returncode == 0, switched.stderr
        # Fires once a failure is scraped and nothing was archived for 2 minutes (the last
        # success may be recent), plus evaluation and group_wait.
        fired = lab2.wait_for(lambda: arrived(broken, False), timeout=240, interval=2)
    finally:
        repaired = time.time()
        assert lab2.ssh(backup, f"chmod {mode} {archive}").returncode == 0
        # A new segment wakes the archiver, which pushes the failed one first.
        lab2.ssh(leader, SWITCH)
    assert fired, "no WalArchivingFailing at the fake Telegram within 240 s"
    resolved = lab2.wait_for(lambda: arrived(repaired, True), timeout=180, interval=2)
    assert resolved, "WalArchivingFailing was not resolved at the fake Telegram after the repair"
    print(
        f"\nALERT: archive unreadable on the backup host; WalArchivingFailing at the fake "
        f"Telegram after {fired['received'] - broken:.0f} s, resolved "
        f"{resolved['received'] - repaired:.0f} s after the repair "
        f"(stage {time.time() - broken:.0f} s)"
    )
