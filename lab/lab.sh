#!/usr/bin/env bash
# The local lab: one systemd + sshd container per host of inventory/lab/hosts.yml, on an internal
# Docker network, standing in for VPSes (see docs/lab.md).
#   lab/lab.sh build            build the image when lab/packages.txt or the build script changed
#   lab/lab.sh up               build if needed, start (or reuse) every host, wait for sshd
#   lab/lab.sh down             remove the containers and the network (the image stays)
#   lab/lab.sh status           host, address, container state, systemd state of main services
#   lab/lab.sh ssh HOST [CMD]   ssh into a host with the lab key
#   lab/lab.sh exec HOST CMD..  run a command in a host's container (docker exec)
#   lab/lab.sh keys             record every host's SSH host key again (after a deliberate change)
set -euo pipefail
cd "$(dirname "$0")/.."

INVENTORY=inventory/lab/hosts.yml
STATE=lab/.state
KEY=$STATE/id_ed25519
# Each host's SSH host key, read through docker exec when the host comes up (a channel that
# needs no trust on first use): the only key ssh, Ansible, pyinfra and the tests accept for it.
KNOWN_HOSTS=$STATE/known_hosts
NET=grimbots-lab
SUBNET=10.77.0.0/24
PREFIX=grimbots-lab-
SSH_WAIT=${LAB_SSH_WAIT:-120} # seconds every sshd gets to answer after `up`
FAKE_TG_SRC=tools/fake_telegram/fake_telegram.py
# Pebble's trust bundle (its listener's CA + the root it issues under), copied from the outside
# host after lab/outside/pebble.yml: the lab inventory's haproxy_acme_ca_certificates, the tests'
# and the fake Telegram's CA file (docs/https.md, "The lab").
PEBBLE_TRUST=$STATE/pebble-trust.pem
# The image is named after what it is built from, so it is rebuilt only when that changes.
IMAGE=grimbots-lab:$(cat lab/packages.txt lab/build_image.sh | sha256sum | cut -c1-12)
# The systemd flags that boot systemd as PID 1 here (--privileged fails: no CAP_SYS_RESOURCE).
SYSTEMD_FLAGS=(--cap-add SYS_ADMIN --cap-add NET_ADMIN
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:rw --cgroupns=host
  --stop-signal SIGRTMIN+3)
# The internal network drops every packet that is not for 10.77.0.0/24 (the containers keep a
# default route, like a VPS, so Ansible facts such as ansible_default_ipv4 exist). Docker's DNS
# would forward unknown names to --dns: kept on loopback here (see also resolv.conf in cmd_up).
NET_FLAGS=(--dns 127.0.0.1)
SSH_OPTS=(-i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$KNOWN_HOSTS"
  -o LogLevel=ERROR -o ConnectTimeout=3)

log() { echo "[lab $(date +%H:%M:%S)] $*"; }
die() { echo "lab: $*" >&2; exit 1; }

python_with_yaml() {
  for py in .venv/bin/python python3; do
    "$py" -c 'import yaml' 2>/dev/null && { echo "$py"; return; }
  done
  die "no python with PyYAML: run 'make venv' (or apt-get install python3-yaml)"
}

# HOSTS[i] ADDRS[i] GROUPS_OF[i], in inventory order.
load_hosts() {
  HOSTS=() ADDRS=() GROUPS_OF=()
  local name addr groups
  while read -r name addr groups; do
    HOSTS+=("$name") ADDRS+=("$addr") GROUPS_OF+=("$groups")
  done < <("$(python_with_yaml)" lab/inventory_hosts.py "$INVENTORY")
  ((${#HOSTS[@]})) || die "no hosts in $INVENTORY"
}

addr_of() {
  local i
  for i in "${!HOSTS[@]}"; do [[ ${HOSTS[$i]} == "$1" ]] && { echo "${ADDRS[$i]}"; return; }; done
  die "unknown lab host '$1' (hosts: ${HOSTS[*]})"
}

cmd_build() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE is up to date"
  else
    log "building $IMAGE (debootstrap + apt-get install; about a minute and a half)"
    local start=$SECONDS
    bash lab/build_image.sh "$IMAGE"
    local size
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    log "built $IMAGE in $((SECONDS - start)) s, size $((size / 1000000)) MB"
  fi
  # A stable name for molecule and anything else that wants "the lab image".
  docker tag "$IMAGE" grimbots-lab:latest
  remove_old_images
}

# Older lab images are dead weight (about 1 GB each). Docker refuses to remove one that a
# container still uses; `up` calls this again once it has replaced those containers.
remove_old_images() {
  local old
  mapfile -t old < <(docker images --format '{{.Repository}}:{{.Tag}}' grimbots-lab |
    grep -vxF -e "$IMAGE" -e grimbots-lab:latest)
  mapfile -t -O "${#old[@]}" old < <(docker images -q --filter label=grimbots.lab.image=1 --filter dangling=true)
  ((${#old[@]} == 0)) || docker rmi "${old[@]}" >/dev/null 2>&1 || true
}

ensure_key() {
  mkdir -p "$STATE"
  [[ -f $KEY ]] || { log "generating the lab SSH key $KEY"; ssh-keygen -q -t ed25519 -N '' -C grimbots-lab -f "$KEY"; }
}

ensure_network() {
  if docker network inspect "$NET" >/dev/null 2>&1; then
    local subnet internal
    subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET")
    internal=$(docker network inspect -f '{{.Internal}}' "$NET")
    [[ $subnet == "$SUBNET" && $internal == true ]] && return
    log "network $NET is $subnet (internal=$internal), not internal $SUBNET: replacing it"
    docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NET" | xargs -r docker rm -f >/dev/null
    docker network rm "$NET" >/dev/null
  fi
  log "creating the internal network $NET ($SUBNET)"
  docker network create --internal --subnet "$SUBNET" "$NET" >/dev/null
}

# Every host's /etc/hosts lists every lab host (docker writes --add-host entries there).
# CONFIG names what a container was created from: reuse it only when this is unchanged.
host_config() {
  ADD_HOSTS=()
  local i
  for i in "${!HOSTS[@]}"; do ADD_HOSTS+=(--add-host "${HOSTS[$i]}:${ADDRS[$i]}"); done
  CONFIG=$(echo "$IMAGE ${ADD_HOSTS[*]} ${SYSTEMD_FLAGS[*]} ${NET_FLAGS[*]}" | sha256sum | cut -c1-12)
}

reusable() { # NAME ADDRESS: running, same config, still at its address on the lab network
  local state
  state=$(docker inspect -f '{{.State.Running}} {{index .Config.Labels "grimbots.lab.config"}} {{with index .NetworkSettings.Networks "'"$NET"'"}}{{.IPAddress}}{{end}}' "$1" 2>/dev/null) || return 1
  [[ $state == "true $CONFIG $2" ]]
}

create_host() { # HOST ADDRESS
  local name=$PREFIX$1 tmp
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker create --name "$name" --hostname "$1" --network "$NET" --ip "$2" \
    --label grimbots.lab=1 --label "grimbots.lab.config=$CONFIG" \
    "${ADD_HOSTS[@]}" "${NET_FLAGS[@]}" "${SYSTEMD_FLAGS[@]}" "$IMAGE" \
    2> >(grep -v 'Localhost DNS' >&2) >/dev/null # loopback DNS is the point (NET_FLAGS)
  # Its own machine-id before first boot: the image's is shared by every container, and an empty
  # one could count as a first boot (systemd then runs preset-all, re-enabling services).
  tmp=$(mktemp)
  tr -d '-' </proc/sys/kernel/random/uuid >"$tmp"
  docker cp "$tmp" "$name:/etc/machine-id"
  rm -f "$tmp"
}

# After every start: the lab key for root, and a resolver that fails unknown names at once.
# (Lab hosts resolve each other through /etc/hosts; Docker's DNS, 127.0.0.11, makes unknown
# names hang for 20 s.) Docker rewrites resolv.conf when a container restarts, so `up` redoes it.
prepare_host() { # HOST
  docker exec -i "$PREFIX$1" sh -c 'umask 077 && cat >/root/.ssh/authorized_keys &&
    printf "%s\n" "# lab: names come from /etc/hosts; no DNS server" \
      "nameserver 127.0.0.1" "options timeout:1 attempts:1" >/etc/resolv.conf' <"$KEY.pub"
}

# The known_hosts file rebuilt from every host's ed25519 host key (generated by sshd's
# ExecStartPre on first boot: a recreated host gets a new one, as a reinstalled server does).
record_host_keys() {
  local deadline=$((SECONDS + SSH_WAIT)) i key tmp=$KNOWN_HOSTS.new
  : >"$tmp"
  for i in "${!HOSTS[@]}"; do
    until key=$(docker exec "$PREFIX${HOSTS[$i]}" cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null) &&
      [[ $key == ssh-ed25519\ * ]]; do
      ((SECONDS < deadline)) || die "no SSH host key on ${HOSTS[$i]} within ${SSH_WAIT} s"
      sleep 1
    done
    echo "${ADDRS[$i]} ${key% *}" >>"$tmp"
  done
  mv "$tmp" "$KNOWN_HOSTS"
  log "recorded ${#HOSTS[@]} host keys in $KNOWN_HOSTS"
}

wait_for_ssh() {
  local deadline=$((SECONDS + SSH_WAIT)) pending=("${HOSTS[@]}") left pids i
  log "waiting for sshd on ${#pending[@]} hosts (at most ${SSH_WAIT} s)"
  while ((${#pending[@]})); do
    left=() pids=()
    # One probe per pending host at a time, in parallel: a round costs one ssh, not twelve.
    for i in "${pending[@]}"; do
      ssh "${SSH_OPTS[@]}" "root@$(addr_of "$i")" true 2>/dev/null &
      pids+=($!)
    done
    for i in "${!pending[@]}"; do wait "${pids[$i]}" || left+=("${pending[$i]}"); done
    pending=("${left[@]+"${left[@]}"}")
    ((${#pending[@]})) || break
    ((SECONDS < deadline)) || die "sshd did not answer within ${SSH_WAIT} s on: ${pending[*]}
  look with: lab/lab.sh exec ${pending[0]} journalctl -u ssh --no-pager | tail"
    sleep 2
  done
}

# The fake Telegram Bot API on the telegram host(s), as a systemd unit on :8081.
install_fake_telegram() {
  local i name changed
  [[ -f $FAKE_TG_SRC ]] || { log "WARNING: $FAKE_TG_SRC does not exist yet: fake-telegram not installed"; return 0; }
  for i in "${!HOSTS[@]}"; do
    [[ ,${GROUPS_OF[$i]}, == *,telegram,* ]] || continue
    name=$PREFIX${HOSTS[$i]}
    changed=0
    # The script and its webhook-delivery module (tools/fake_telegram/webhook_delivery.py).
    if [[ $(docker exec "$name" sh -c 'cd /opt/fake-telegram 2>/dev/null && cat fake_telegram.py webhook_delivery.py' | sha256sum) != \
      $(cat "$FAKE_TG_SRC" "${FAKE_TG_SRC%/*}/webhook_delivery.py" | sha256sum) ]]; then
      docker exec "$name" mkdir -p /opt/fake-telegram
      docker cp "$FAKE_TG_SRC" "$name:/opt/fake-telegram/fake_telegram.py"
      docker cp "${FAKE_TG_SRC%/*}/webhook_delivery.py" "$name:/opt/fake-telegram/webhook_delivery.py"
      changed=1
    fi
    # Pebble's trust bundle: a new one (Pebble restarted) restarts the fake Telegram.
    if [[ $(docker exec "$name" cat /opt/fake-telegram/ca.pem 2>/dev/null | sha256sum) != $(sha256sum <"$PEBBLE_TRUST") ]]; then
      docker cp "$PEBBLE_TRUST" "$name:/opt/fake-telegram/ca.pem"
      changed=1
    fi
    docker exec -i "$name" sh -c 'cat >/etc/systemd/system/fake-telegram.service.new' <<'EOF'
[Unit]
Description=Fake Telegram Bot API (lab only): records every call the bots make
After=network.target

[Service]
# 0.0.0.0: the app hosts call it over the lab network (the script defaults to 127.0.0.1).
# Webhooks over HTTPS only, verified against Pebble's trust bundle (the lab's ACME CA), as
# Telegram verifies against the public roots.
ExecStart=/usr/bin/python3 /opt/fake-telegram/fake_telegram.py --host 0.0.0.0 --port 8081 --ca-file /opt/fake-telegram/ca.pem
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
    docker exec "$name" sh -c 'cd /etc/systemd/system && if cmp -s fake-telegram.service.new fake-telegram.service;
      then rm fake-telegram.service.new; exit 1; else mv fake-telegram.service.new fake-telegram.service; fi' &&
      { changed=1; docker exec "$name" systemctl daemon-reload; }
    docker exec "$name" systemctl enable -q fake-telegram.service
    if ((changed)); then
      docker exec "$name" systemctl restart fake-telegram.service
    else
      docker exec "$name" systemctl start fake-telegram.service
    fi
    docker exec "$name" sh -c 'for _ in $(seq 50); do curl -sf -m1 http://127.0.0.1:8081/_health >/dev/null && exit 0; sleep 0.2; done; exit 1' ||
      die "fake-telegram on ${HOSTS[$i]} does not answer on :8081; see: lab/lab.sh exec ${HOSTS[$i]} journalctl -u fake-telegram"
    log "fake-telegram on ${HOSTS[$i]}:8081 ($( ((changed)) && echo restarted || echo unchanged))"
  done
}

# Pebble, the lab's ACME CA, on the outside host (its own Ansible play, the one molecule
# front_door runs too), whichever tool deploys the phases; then its trust bundle into $STATE.
install_pebble() {
  local i ansible=ansible-playbook
  [[ -x .venv/bin/ansible-playbook ]] && ansible=.venv/bin/ansible-playbook
  for i in "${!HOSTS[@]}"; do
    [[ ,${GROUPS_OF[$i]}, == *,outside,* ]] || continue
    "$ansible" -i "$INVENTORY" --limit "${HOSTS[$i]}" \
      --vault-password-file inventory/lab/vault-password.txt lab/outside/pebble.yml >"$STATE/pebble.log" 2>&1 ||
      die "Pebble on ${HOSTS[$i]} failed; see $STATE/pebble.log"
    docker exec "$PREFIX${HOSTS[$i]}" cat /etc/pebble/trust.pem >"$PEBBLE_TRUST.new"
    mv "$PEBBLE_TRUST.new" "$PEBBLE_TRUST"
    log "Pebble on ${HOSTS[$i]}:14000; its trust bundle in $PEBBLE_TRUST"
    return 0
  done
  die "no host in the outside group for Pebble"
}

cmd_up() {
  local start=$SECONDS i name created=() reused=()
  cmd_build
  ensure_key
  ensure_network
  load_hosts
  host_config
  for i in "${!HOSTS[@]}"; do
    name=$PREFIX${HOSTS[$i]}
    if reusable "$name" "${ADDRS[$i]}"; then
      reused+=("${HOSTS[$i]}")
    else
      create_host "${HOSTS[$i]}" "${ADDRS[$i]}"
      created+=("$name")
    fi
  done
  log "reusing ${#reused[@]} running hosts${reused[*]:+ (${reused[*]})}; starting ${#created[@]}"
  ((${#created[@]} == 0)) || docker start "${created[@]}" >/dev/null
  for i in "${HOSTS[@]}"; do prepare_host "$i"; done
  record_host_keys
  wait_for_ssh
  install_pebble
  install_fake_telegram
  remove_old_images
  log "lab up: ${#HOSTS[@]} hosts in $((SECONDS - start)) s (lab/lab.sh status shows them)"
}

cmd_down() {
  local names
  mapfile -t names < <(docker ps -aq --filter label=grimbots.lab=1)
  if ((${#names[@]})); then
    log "removing ${#names[@]} lab containers"
    docker rm -f "${names[@]}" >/dev/null
  fi
  if docker network inspect "$NET" >/dev/null 2>&1; then
    docker network rm "$NET" >/dev/null && log "removed network $NET"
  fi
  log "lab down (the image stays; docker rmi grimbots-lab:latest removes it)"
}

# Main services per inventory group, for `status` (not installed yet shows as inactive).
services_of() {
  local g out="ssh"
  for g in ${1//,/ }; do
    case $g in
      lb) out+=" haproxy" ;;
      app) out+=" grimbots-web redis-server" ;;
      db) out+=" etcd patroni" ;;
      redis) out+=" redis-server redis-sentinel" ;;
      monitoring) out+=" prometheus prometheus-alertmanager grafana-server" ;;
      telegram) out+=" fake-telegram" ;;
    esac
  done
  echo "$out"
}

cmd_status() {
  local i name state system units states
  load_hosts
  echo "image: $IMAGE ($(docker image inspect "$IMAGE" >/dev/null 2>&1 && echo present || echo 'not built'))"
  printf '%-8s %-12s %-10s %-10s %s\n' HOST ADDRESS CONTAINER SYSTEMD SERVICES
  for i in "${!HOSTS[@]}"; do
    name=$PREFIX${HOSTS[$i]}
    state=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null || echo absent)
    system=- states=-
    if [[ $state == running ]]; then
      system=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
      read -ra units <<<"$(services_of "${GROUPS_OF[$i]}")"
      states=$(paste -d= <(printf '%s\n' "${units[@]}") \
        <(docker exec "$name" systemctl is-active "${units[@]}" 2>/dev/null || true) | tr '\n' ' ')
    fi
    printf '%-8s %-12s %-10s %-10s %s\n' "${HOSTS[$i]}" "${ADDRS[$i]}" "$state" "${system:--}" "$states"
  done
}

cmd_ssh() {
  [[ $# -ge 1 ]] || die "usage: lab/lab.sh ssh HOST [CMD...]"
  load_hosts
  local addr
  addr=$(addr_of "$1")
  shift
  exec ssh "${SSH_OPTS[@]}" "root@$addr" "$@"
}

cmd_keys() {
  load_hosts
  record_host_keys
}

cmd_exec() {
  [[ $# -ge 2 ]] || die "usage: lab/lab.sh exec HOST CMD..."
  load_hosts
  addr_of "$1" >/dev/null
  local name=$PREFIX$1 tty=()
  shift
  [[ -t 0 && -t 1 ]] && tty=(-it)
  exec docker exec "${tty[@]+"${tty[@]}"}" "$name" "$@"
}

{ command -v docker >/dev/null && docker info >/dev/null 2>&1; } ||
  die "the Docker engine is not running: run 'make services' (scripts/services.sh)"
case ${1:-} in
  build | up | down | status | ssh | exec | keys) cmd=$1; shift; "cmd_$cmd" "$@" ;;
  *) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
