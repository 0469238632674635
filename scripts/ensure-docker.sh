#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (Debian 12, root, no systemd as PID 1).
# Idempotent: installs docker.io only when dockerd is missing, starts it only when it is down.
set -euo pipefail

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io and debootstrap from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
command -v debootstrap >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

if docker info >/dev/null 2>&1; then
  exit 0
fi

echo "ensure-docker: starting dockerd in the background (log: /var/log/dockerd.log)"
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
