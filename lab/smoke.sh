#!/usr/bin/env bash
# Prove the running lab is what the deploy tools expect (run after `lab/lab.sh up`):
# systemd healthy on every host, root SSH with the lab key, names resolve between hosts,
# PrivateUsers=yes units start, fake Telegram answers, and nothing leaves the lab network.
# The isolation check sends traffic only to a throwaway container of ours on Docker's default
# bridge: a lab host must not reach it, while this machine can.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0
check() { # NAME CMD...: run CMD, count and print the result
  local name=$1
  shift
  if "$@" >/tmp/grimbots-lab-smoke.out 2>&1; then
    passed=$((passed + 1)) && echo "ok    $name"
  else
    failed=$((failed + 1)) && echo "FAIL  $name: $(tail -3 /tmp/grimbots-lab-smoke.out | tr '\n' ' ')"
  fi
}
lab() { bash lab/lab.sh "$@"; }

mapfile -t HOSTS < <(.venv/bin/python lab/inventory_hosts.py | cut -d' ' -f1)
first=${HOSTS[0]} last=${HOSTS[-1]}

for h in "${HOSTS[@]}"; do
  check "$h: ssh as root with the lab key, systemd running" \
    bash -c "[[ \$(bash lab/lab.sh ssh $h systemctl is-system-running) == running ]]"
done
check "$first resolves and reaches $last by name" lab ssh "$first" "ping -c1 -W2 $last"
check "unknown names fail at once (no outside DNS)" \
  lab ssh "$first" 'timeout 3 getent hosts no-such-host.invalid; [ $? -eq 2 ]' # 2: not found
# PrivateUsers=yes with ProtectProc=invisible (as in Debian's redis-server.service) fails with
# 217/USER in these containers unless the image's drop-in turns PrivateUsers off.
# shellcheck disable=SC2016 # $RANDOM expands on the lab host
check "a PrivateUsers=yes + ProtectProc=invisible unit starts (lab drop-in)" lab ssh "$first" \
  'systemd-run --unit lab-smoke-pu-$RANDOM -p PrivateUsers=yes -p ProtectProc=invisible \
    -p User=nobody --wait --quiet true'
if [[ -f tools/fake_telegram/fake_telegram.py ]]; then
  check "fake Telegram answers on tg1:8081" lab ssh "$first" 'curl -sf -m3 http://tg1:8081/_health'
fi

# Isolation: a listener of ours outside the lab network.
probe=grimbots-lab-smoke-probe
docker rm -f "$probe" >/dev/null 2>&1 || true
docker run -d --rm --name "$probe" --network bridge grimbots-lab:latest \
  python3 -m http.server 8000 >/dev/null
trap 'docker rm -f "$probe" >/dev/null 2>&1 || true' EXIT
addr=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$probe")
check "this machine reaches the probe outside the lab ($addr)" \
  bash -c "for _ in \$(seq 30); do curl -sf -m1 -o /dev/null http://$addr:8000/ && exit 0; sleep 0.3; done; exit 1"
check "a lab host cannot reach the probe outside the lab" lab ssh "$first" \
  "curl -s -m3 http://$addr:8000/; [ \$? -eq 28 ]" # 28: timed out, the packets are dropped
check "the lab network is internal" \
  grep -qx true <(docker network inspect -f '{{.Internal}}' grimbots-lab)

echo "lab-smoke: $passed passed, $failed failed"
((failed == 0))
