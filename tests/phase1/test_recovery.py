"""Phase 1 recovery: a process killed with SIGKILL is back, serving, in under 15 s."""

import pytest

LIMIT = 15.0

# Runs on the host: kill the unit's main process, then poll (bounded: 300 x 0.1 s) until
# systemd reports a new main process and READY says it serves; print the seconds it took.
KILL_AND_WAIT = r"""
unit={unit}
old=$(systemctl show -p MainPID --value "$unit")
start=$(date +%s.%N)
kill -9 "$old"
for i in $(seq 300); do
  new=$(systemctl show -p MainPID --value "$unit")
  state=$(systemctl show -p ActiveState --value "$unit")
  if [ "$new" != 0 ] && [ "$new" != "$old" ] && [ "$state" = active ] && {ready}; then
    break
  fi
  sleep 0.1
done
end=$(date +%s.%N)
echo "$old $new $start $end"
"""

WEB_READY = (
    '[ "$(curl -s -o /dev/null -m 1 -w %{{http_code}} http://127.0.0.1:{port}/health)" != 000 ]'
)
# A worker is ready once its process has become the RQ worker (argv ends with the queue).
WORKER_READY = 'tr "\\0" " " < /proc/$new/cmdline 2>/dev/null | grep -q " worker "'


def _kill_and_measure(host, unit: str, ready: str) -> float:
    out = host.check_output(KILL_AND_WAIT.format(unit=unit, ready=ready))
    old, new, start, end = out.split()
    assert new not in ("0", old), f"{unit} did not come back: {out}"
    return float(end) - float(start)


def test_web_master_killed_with_sigkill_is_back_within_15_s(app_host, app_vars):
    seconds = _kill_and_measure(
        app_host, "grimbots-web", WEB_READY.format(port=app_vars["grimbots_web_port"])
    )
    print(f"\nrecovery: grimbots-web (Gunicorn master, kill -9) back in {seconds:.2f} s")
    assert seconds < LIMIT


@pytest.mark.parametrize("instance", ["tasks-1", "webhook-2"])
def test_worker_killed_with_sigkill_is_back_within_15_s(app_host, instance):
    seconds = _kill_and_measure(app_host, f"grimbots-worker@{instance}", WORKER_READY)
    print(f"\nrecovery: grimbots-worker@{instance} (kill -9) back in {seconds:.2f} s")
    assert seconds < LIMIT
