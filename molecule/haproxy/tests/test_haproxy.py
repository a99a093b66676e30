"""The haproxy role on one container in front of three stand-in app nodes: HTTPS with the lab CA,
the redirect, modern TLS only, checks that take a dead node out of rotation within the recovery
knob, retries only where they are safe, the body limit, the /go rate limit, X-Forwarded-For,
stats and Prometheus behind auth, the runtime API, and a reload that refuses no connection."""

import base64
import json
import os
import time

import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_ports

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("lb")

# The platform contract's ports as the converge got them (molecule's inventory).
PORTS = platform_ports(os.environ["MOLECULE_INVENTORY_FILE"])

CA = "/etc/haproxy/certs/ca.crt"
HTTPS = PORTS["haproxy_https"]
BASE = f"https://lb.molecule.test:{HTTPS}"
CURL = f"curl -s --max-time 10 --cacert {CA} --resolve lb.molecule.test:{HTTPS}:127.0.0.1"
SOCKET = "/run/haproxy/admin.sock"
STATS_AUTH = "stats:molecule-stats-0123456789"
# haproxy_recovery_seconds (the default) and the derived timings at that value
# (roles/haproxy/derived.py): out of rotation within 2.4 s.
RECOVERY_S = 3


def _status(host, args: str) -> str:
    return host.check_output(f"{CURL} -o /dev/null -w '%{{http_code}}' {args}")


def _servers(host) -> dict[str, str]:
    """Server name -> operational state (2 = UP, 0 = DOWN) from the runtime API."""
    out = host.check_output(f"echo 'show servers state app' | nc -U -N {SOCKET}")
    states = {}
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) > 5:
            states[fields[3]] = fields[5]
    return states


def _wait_servers(host, want: dict[str, str], limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if all(_servers(host).get(k) == v for k, v in want.items()):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"servers {_servers(host)} never reached {want} in {limit} s")


def test_haproxy_runs_enabled_with_a_valid_config(host):
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled
    assert host.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0
    cfg = host.file("/etc/haproxy/haproxy.cfg")
    assert cfg.mode == 0o640 and cfg.group == "haproxy"
    assert host.file("/etc/haproxy/certs/site.pem").mode == 0o600


def test_https_reaches_every_app_node_in_turn(host):
    nodes = {json.loads(host.check_output(f"{CURL} {BASE}/api/x"))["node"] for _ in range(6)}
    assert nodes == {"app1", "app2", "app3"}


def test_http_redirects_to_https(host):
    out = host.check_output(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "
        f"http://127.0.0.1:{PORTS['haproxy_http']}/go/x?a=1"
    )
    # No port in the target: HAProxy keeps the Host header, and https is on its default port.
    assert out == "301 https://127.0.0.1/go/x?a=1"


def test_tls_below_1_2_is_refused_and_1_3_is_offered(host):
    old = host.run(
        f"openssl s_client -connect 127.0.0.1:{HTTPS} -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'"
        " </dev/null"
    )
    assert old.rc != 0
    new = host.run(f"openssl s_client -connect 127.0.0.1:{HTTPS} -tls1_3 -CAfile {CA} </dev/null")
    assert new.rc == 0 and "TLSv1.3" in new.stdout


def test_the_client_address_is_forwarded(host):
    body = json.loads(host.check_output(f"{CURL} {BASE}/api/x"))
    headers = {k.lower(): v for k, v in body["headers"].items()}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"


def test_a_body_over_the_limit_is_refused_before_any_node(host):
    # Only the declared length is sent: HAProxy answers from the headers, before any body.
    big = _status(
        host, f"--http1.1 -X POST -H 'Content-Length: 1100000' --data-binary @/dev/null {BASE}/x"
    )
    assert big == "413"
    assert _status(host, f"-X POST -d '{{}}' {BASE}/webhook/telegram/1") == "200"


def test_the_apps_own_metrics_are_not_public(host):
    assert _status(host, f"{BASE}/metrics") == "403"


def test_go_is_rate_limited_per_client(host):
    codes = [_status(host, f"{BASE}/go/pool") for _ in range(12)]
    assert codes[:5] == ["200"] * 5
    assert "429" in codes[5:]


def _stats_address(host) -> str:
    """Where the stats frontend listens: one address (the host's private one), never all."""
    lines = host.check_output(f"ss -ltnH 'sport = :{PORTS['haproxy_stats']}'").splitlines()
    (local,) = {line.split()[3] for line in lines}
    assert not local.startswith(("0.0.0.0:", "*:", "[::]:")), local
    return local


def test_stats_and_prometheus_need_the_password(host):
    stats_at = _stats_address(host)
    unauthenticated = f"curl -s -o /dev/null -w '%{{http_code}}' {stats_at}/metrics"
    assert host.check_output(unauthenticated) == "401"
    metrics = host.check_output(f"curl -sf -u {STATS_AUTH} {stats_at}/metrics")
    assert 'haproxy_server_status{proxy="app",server="app1",state="UP"} 1' in metrics
    stats = host.run(f"curl -sf -u {STATS_AUTH} -o /dev/null {stats_at}/stats")
    assert stats.rc == 0


def test_a_dead_node_is_out_of_rotation_within_the_recovery_knob(host):
    assert _wait_servers(host, {"app1": "2", "app2": "2", "app3": "2"}, 10) >= 0
    host.check_output("systemctl stop fake-app@2")
    try:
        took = _wait_servers(host, {"app2": "0"}, 10)
        print(f"app2 out of rotation {took:.2f} s after its death (knob {RECOVERY_S} s)")
        assert took <= RECOVERY_S
        # Meanwhile and after, no client request fails (conn-failure is retried elsewhere).
        codes = {_status(host, f"-X POST -d x {BASE}/api/y") for _ in range(6)}
        assert codes == {"200"}
    finally:
        host.check_output("systemctl start fake-app@2")
    _wait_servers(host, {"app2": "2"}, 10)


def test_a_failing_health_check_takes_a_node_out(host):
    host.check_output("touch /run/fake-app/127.0.0.3.sick")
    try:
        _wait_servers(host, {"app3": "0"}, 10)
    finally:
        host.check_output("rm -f /run/fake-app/127.0.0.3.sick")
    _wait_servers(host, {"app3": "2"}, 10)


def test_a_node_that_drops_requests_costs_the_webhook_and_gets_nothing(host):
    host.check_output("touch /run/fake-app/127.0.0.1.drop")
    try:
        webhook = [_status(host, f"-X POST -d '{{}}' {BASE}/webhook/telegram/7") for _ in range(6)]
        gets = [_status(host, f"{BASE}/api/bots") for _ in range(6)]
        # HTTP/1.1 clients: a write the node dropped is answered 502, not replayed (over HTTP/2,
        # HAProxy 2.6 re-sends a request whose fresh server connection closed unanswered).
        posts = [_status(host, f"--http1.1 -X POST -d x {BASE}/api/bots") for _ in range(6)]
    finally:
        host.check_output("rm -f /run/fake-app/127.0.0.1.drop")
    assert webhook == ["200"] * 6
    assert gets == ["200"] * 6
    assert "502" in posts, posts


def test_only_idempotent_requests_are_retried_after_a_timeout(host):
    # converge.yml sets haproxy_timeout_server_s: 2; the slow node answers after 5 s.
    host.check_output("touch /run/fake-app/127.0.0.1.slow")
    try:
        webhook = [_status(host, f"-X POST -d '{{}}' {BASE}/webhook/telegram/7") for _ in range(3)]
        posts = [_status(host, f"-X POST -d x {BASE}/api/bots") for _ in range(3)]
    finally:
        host.check_output("rm -f /run/fake-app/127.0.0.1.slow")
    assert webhook == ["200"] * 3
    # A POST that reached a node which then hung is answered 504, never replayed elsewhere.
    assert "504" in posts, posts


def test_the_runtime_api_drains_and_readies_a_node(host):
    host.check_output(f"echo 'set server app/app1 state drain' | nc -U -N {SOCKET}")
    try:
        nodes = {json.loads(host.check_output(f"{CURL} {BASE}/api/x"))["node"] for _ in range(6)}
        assert "app1" not in nodes
    finally:
        host.check_output(f"echo 'set server app/app1 state ready' | nc -U -N {SOCKET}")


def test_a_reload_under_requests_refuses_none(host):
    script = (
        f"for i in $(seq 1 300); do {CURL} -o /dev/null -w '%{{http_code}}\\n' {BASE}/api/x; done\n"
    )
    encoded = base64.b64encode(script.encode()).decode()
    host.check_output(f"echo {encoded} | base64 -d > /tmp/reload-load.sh")
    host.check_output("nohup sh /tmp/reload-load.sh > /tmp/reload-codes 2>&1 &")
    for _ in range(3):
        time.sleep(0.3)
        host.check_output("systemctl reload haproxy")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(host.file("/tmp/reload-codes").content_string.split()) >= 300:
            break
        time.sleep(0.5)
    codes = host.file("/tmp/reload-codes").content_string.split()
    print(f"{len(codes)} requests during 3 reloads: { ({c: codes.count(c) for c in set(codes)}) }")
    assert len(codes) == 300
    assert set(codes) == {"200"}
