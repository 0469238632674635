#!/bin/sh
# Checks that the role's TLS between RabbitMQ nodes (templates/etc/rabbitmq/rabbitmq-env.conf.j2
# and inter_node_tls.config.j2) works with a Debian release's own RabbitMQ and Erlang, where no
# Molecule scenario runs RabbitMQ: one node in a systemd container of IMAGE, its certificate from
# a throw-away CA. Prints the versions, the running node as rabbitmqctl sees it over TLS, and a
# TLS probe of port 25672 with and without a certificate of the CA (expect "ok", then "refused").
# Usage: scripts/check-rabbitmq-dist-tls.sh [dhis-celery/debian:trixie]
set -eu
image=${1:-dhis-celery/debian:trixie}
name=dhis-check-dist-tls
docker rm -f "$name" >/dev/null 2>&1 || true
docker run -d --name "$name" --hostname rmqt --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
  --security-opt apparmor=unconfined --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
  --tmpfs /run --tmpfs /run/lock "$image" /lib/systemd/systemd >/dev/null
trap 'docker rm -f "$name" >/dev/null' EXIT
sleep 3
docker exec -i "$name" sh -s <<'NODE'
set -e
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends rabbitmq-server openssl python3 >/dev/null
rm /usr/sbin/policy-rc.d
dpkg-query -W rabbitmq-server erlang-base
d=/etc/dhis-celery-tls; mkdir -p $d; cd $d
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=check-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout rabbitmq.key -out node.csr -subj "/CN=$(hostname)" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:localhost\n' "$(hostname)" > san
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out rabbitmq.pem -days 1 -extfile san 2>/dev/null
chgrp rabbitmq rabbitmq.key; chmod 640 rabbitmq.key
NODE
# The role's own templates, rendered for this node (the paths are the role's).
for f in rabbitmq-env.conf inter_node_tls.config; do
  sed -e '/ansible_managed/d' -e '/{%/d' \
    -e 's|{{ __dhis_celery_rabbitmq_dist_optfile }}|/etc/rabbitmq/inter_node_tls.config|g' \
    -e 's|{{ __dhis_celery_tls_ca_file }}|/etc/dhis-celery-tls/ca.pem|g' \
    -e 's|{{ __dhis_celery_tls_rabbitmq.cert_file }}|/etc/dhis-celery-tls/rabbitmq.pem|g' \
    -e 's|{{ __dhis_celery_tls_rabbitmq.key_file }}|/etc/dhis-celery-tls/rabbitmq.key|g' \
    "$(dirname "$0")/../roles/dhis_celery/templates/etc/rabbitmq/$f.j2" |
    docker exec -i "$name" sh -c "cat > /etc/rabbitmq/$f && chgrp rabbitmq /etc/rabbitmq/$f && chmod 640 /etc/rabbitmq/$f"
done
docker exec -i "$name" sh -s <<'NODE'
set -e
systemctl start rabbitmq-server
rabbitmqctl -q cluster_status --formatter json | python3 -c 'import json, sys; print("running", json.load(sys.stdin)["running_nodes"])'
python3 - <<'PY'
import socket, ssl
for cert in (True, False):
    context = ssl.create_default_context(cafile="/etc/dhis-celery-tls/ca.pem")
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT  # the throw-away CA has no key identifiers
    if cert:
        context.load_cert_chain("/etc/dhis-celery-tls/rabbitmq.pem", "/etc/dhis-celery-tls/rabbitmq.key")
    label = "25672 with a certificate of the CA:" if cert else "25672 without a certificate:"
    try:
        with context.wrap_socket(socket.create_connection(("localhost", 25672), 5), server_hostname="localhost") as s:
            s.settimeout(1)
            try:
                print(label, "ok" if s.recv(1) else "closed", s.version())
            except TimeoutError:
                print(label, "ok", s.version())
    except ssl.SSLError as error:
        print(label, "refused", error.reason)
PY
NODE
