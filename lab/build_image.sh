#!/usr/bin/env bash
# Build the lab image TAG from Debian packages only (no container registry is reachable here):
# debootstrap bookworm into a temp dir, apt-get install lab/packages.txt in the chroot, make the
# tree fit a container that boots systemd, then `docker import` it.
# Called by `lab/lab.sh build`; the tag is a hash of this file and packages.txt.
set -euo pipefail
TAG=${1:?usage: build_image.sh TAG}
LAB_DIR=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm

log() { echo "[lab build $(date +%H:%M:%S)] $*"; }

# The Debian mirror this machine's apt already uses (never a hard-coded host): one line per
# repository, e.g. "http://mirror/debian/ bookworm main".
# shellcheck disable=SC2016 # $(...) here is apt's own field syntax
mapfile -t REPOS < <(apt-get indextargets --no-release-info \
  --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' |
  awk -v s="$SUITE" '$2 == s || $2 == s"-updates" || $2 == s"-security"' | sort -u)
MIRROR=$(printf '%s\n' "${REPOS[@]}" | awk -v s="$SUITE" '$2 == s {print $1; exit}')
[[ -n $MIRROR ]] || { echo "no $SUITE repository in this machine's apt sources (run apt-get update)" >&2; exit 1; }

ROOT=$(mktemp -d /var/tmp/grimbots-lab-root.XXXXXX)
chmod 755 "$ROOT" # apt's _apt user must read it
cleanup() {
  # Unmount first: rm -rf must never walk into the host's /proc, /sys or /dev.
  for m in dev/pts proc sys; do umount -l "$ROOT/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR into $ROOT"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 ||
  { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
rm -f "$ROOT.debootstrap.log"

printf 'deb %s\n' "${REPOS[@]}" >"$ROOT/etc/apt/sources.list"
# No service may start inside the chroot during the build.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount -t devpts devpts "$ROOT/dev/pts"

mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LAB_DIR/packages.txt" | grep -v '^$')
log "apt-get install ${#PKGS[@]} packages (and their dependencies)"
in_root() { chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io \
  "${PKGS[@]}" >"$ROOT/tmp/apt.log" 2>&1 || { tail -30 "$ROOT/tmp/apt.log" >&2; exit 1; }

log "preparing the tree for systemd in a container"
# Patroni must own the data directory: drop the cluster Debian creates on install.
in_root pg_dropcluster --stop 15 main 2>/dev/null || true

# Every role enables the services it needs; the image starts only what any host needs.
disabled=()
KEEP='^(ssh|cron|chrony|dbus|logrotate|systemd-.*)\.(service|socket|timer)$'
for unit in $(in_root systemctl list-unit-files --state=enabled --no-legend | awk '{print $1}'); do
  [[ $unit =~ \.(service|socket|timer)$ && ! $unit =~ $KEEP && $unit != *@* ]] || continue
  in_root systemctl disable "$unit" >/dev/null 2>&1 || true
  disabled+=("$unit")
done
log "disabled: ${disabled[*]}"

# Lab only: on this kernel PrivateUsers=yes fails with 217/USER inside a container, so switch it
# off for every service (Debian's redis-server, prometheus ... set it). Production keeps it.
mkdir -p "$ROOT/etc/systemd/system/service.d"
cat >"$ROOT/etc/systemd/system/service.d/90-lab-no-private-users.conf" <<'EOF'
# Lab image only: user namespaces fail inside the lab containers (217/USER).
[Service]
PrivateUsers=no
EOF

# Each container gets its own SSH host keys at first start, not copies baked into the image.
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
cat >"$ROOT/etc/systemd/system/ssh.service.d/90-lab-host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
cat >"$ROOT/etc/ssh/sshd_config.d/90-lab.conf" <<'EOF'
# Lab: key-only root login (the key lab.sh generates), no reverse DNS lookups.
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
install -d -m 700 "$ROOT/root/.ssh"

# Back to a normal host: services may start again, no downloaded .debs in the image.
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/tmp/apt.log"
in_root apt-get clean
for m in dev/pts proc sys; do umount -l "$ROOT/$m"; done

log "docker import as $TAG"
tar -C "$ROOT" --numeric-owner -c . |
  docker import --change 'ENV container=docker' --change 'CMD ["/sbin/init"]' \
    --change 'LABEL grimbots.lab.image=1' - "$TAG" >/dev/null
