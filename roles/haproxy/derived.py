"""The haproxy role's derived values: its health-check timings from the one recovery knob."""

from __future__ import annotations

# HAProxy marks a server down after this many failed checks in a row (2 rather than 1: one lost
# check must not take a healthy node out of rotation).
HAPROXY_FALL = 2


def haproxy_check_timings(recovery_seconds: int | str) -> dict[str, int]:
    """HAProxy's check ``inter``, ``fastinter``, ``fall``, ``rise`` and ``timeout check`` (ms)
    from the one knob: the most seconds a dead app node may stay in rotation.

    A node dying just after a passing check is out once ``fall`` checks failed: the first starts
    up to ``inter`` later, each later one ``fastinter`` after the previous (HAProxy's interval
    once a check failed), and the last may wait out ``timeout check`` (a dead host answers no
    SYN). So inter + (fall - 1) x fastinter + timeout_check must stay within the knob; a fifth of
    it is kept as margin for a busy scheduler; a quarter of the rest is the check timeout (a slow
    readiness answer under load must not look dead). At 3 s: inter 1200, fastinter 600, timeout
    600 ms: out after at most 2.4 s.
    """
    budget = int(recovery_seconds) * 1000 * 4 // 5
    timeout_check = max(100, budget // 4)
    # inter = 2 x fastinter, so inter + (fall - 1) x fastinter = (fall + 1) x fastinter.
    fastinter = max(100, (budget - timeout_check) // (HAPROXY_FALL + 1))
    return {
        "inter": 2 * fastinter,
        "fastinter": fastinter,
        "fall": HAPROXY_FALL,
        "rise": 2,
        "timeout_check": timeout_check,
    }


def haproxy_out_of_rotation_ms(recovery_seconds: int | str) -> int:
    """The longest a dead node stays in rotation with haproxy_check_timings (ms)."""
    t = haproxy_check_timings(recovery_seconds)
    return t["inter"] + (t["fall"] - 1) * t["fastinter"] + t["timeout_check"]


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_haproxy_check_timings": haproxy_check_timings,
}
