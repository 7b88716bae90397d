#!/usr/bin/env bash
# Install the real third-party proxy peers used by tests/test_peer_servers.py
# and the server suites: dante-server (danted), microsocks, tinyproxy, curl, haproxy
# (the load balancer in front of a fleet) and redis-server (shared rate limits).
#
# Run as root, non-interactively, e.g. in CI:  bash .ci/install-peers.sh
# Idempotent: safe to run again. Never leaves a service listening on the default
# ports (1080, 8888): the tests start their own instances on free loopback ports.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PEER_PACKAGES=(dante-server microsocks tinyproxy curl haproxy redis-server graphviz)
PEER_USER=sockstest
PEER_PASS=sockstest-pass
POLICY=/usr/sbin/policy-rc.d

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: must run as root" >&2
    exit 1
fi

# Forbid service starts during installation (the standard Debian way), keeping
# any pre-existing policy-rc.d (e.g. Docker images ship one) and restoring it.
policy_backup=""
if [ -e "$POLICY" ]; then
    policy_backup="$(mktemp)"
    cp -p "$POLICY" "$policy_backup"
fi
restore_policy() {
    if [ -n "$policy_backup" ]; then
        cp -p "$policy_backup" "$POLICY"
        rm -f "$policy_backup"
    else
        rm -f "$POLICY"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' > "$POLICY"
chmod 0755 "$POLICY"

missing=()
for pkg in "${PEER_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
fi

# Belt and braces: stop and disable the system services in case something started
# them anyway (a host without policy-rc.d support, an earlier manual install).
for svc in danted tinyproxy microsocks haproxy redis-server; do
    if command -v systemctl >/dev/null 2>&1; then
        if [ -d /run/systemd/system ]; then
            systemctl stop "$svc" >/dev/null 2>&1 || true
        fi
        # Works without a running systemd too: it only removes the wants/ links.
        systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$svc" ]; then
        service "$svc" stop >/dev/null 2>&1 || true
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done
# Anything still running from a system-wide config (not our test instances, which
# use configs in temp dirs) is killed by its exact pid file.
for pidfile in /run/danted.pid /var/run/danted.pid /run/tinyproxy/tinyproxy.pid \
               /var/run/tinyproxy/tinyproxy.pid /run/haproxy.pid /run/redis/redis-server.pid; do
    if [ -s "$pidfile" ]; then
        kill "$(cat "$pidfile")" >/dev/null 2>&1 || true
        rm -f "$pidfile"
    fi
done

# Dante's "username" method authenticates against system accounts (PAM-less
# getpwnam/shadow check). A dedicated, login-less system user with a known password.
if ! id -u "$PEER_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PEER_USER"
fi
echo "${PEER_USER}:${PEER_PASS}" | chpasswd

# Report what is installed.
for pkg in "${PEER_PACKAGES[@]}"; do
    dpkg-query -W -f='${Package} ${Version}\n' "$pkg"
done
for bin in danted microsocks tinyproxy curl haproxy redis-server dot; do
    command -v "$bin" >/dev/null 2>&1 || { echo "install-peers.sh: $bin not on PATH" >&2; exit 1; }
done
if command -v ss >/dev/null 2>&1; then
    if ss -ltn | awk '{print $4}' | grep -Eq ':(1080|8888|6379)$'; then
        echo "install-peers.sh: warning: something listens on 1080/8888:" >&2
        ss -ltnp | grep -E ':(1080|8888) ' >&2 || true
    fi
fi
echo "install-peers.sh: peers ready (user ${PEER_USER})"
