#!/usr/bin/env bash
# make demo: a throwaway systemd container running the example app, then the site playbook.
set -euo pipefail
cd "$(dirname "$0")/.."
name=dhis-celery-demo
image=dhis-celery/debian:bookworm
start=$(date +%s)

if ! docker container inspect "$name" >/dev/null 2>&1; then
  docker run -d --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    -p 127.0.0.1:5555:5555 "$image" /lib/systemd/systemd >/dev/null
elif [ "$(docker container inspect -f '{{.State.Running}}' "$name")" != true ]; then
  docker start "$name" >/dev/null
fi

inventory=inventories/demo
ansible-playbook -i "$inventory" molecule/shared/prepare.yml
ansible-playbook -i "$inventory" playbooks/site.yml

cat <<MSG

== The demo host "$name" runs the whole stack ($(( $(date +%s) - start )) s).
Flower:       http://127.0.0.1:5555/  user "ops", password in .demo/credentials/flower_ops
Credentials:  .demo/credentials/ (Redis application and admin users, Flower)
Health check, sent from the Django side and answered by a worker:
  docker exec $name curl -s http://127.0.0.1:8000/health/
Workers:      docker exec $name dhis-celery celery inspect ping
Units:        docker exec $name systemctl list-units 'celery*' 'redis*' dhis-sync-web.service
Rollback:     ansible-playbook -i $inventory playbooks/rollback.yml
Remove:       make demo-clean
MSG
