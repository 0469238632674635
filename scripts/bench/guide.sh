#!/usr/bin/env bash
# The migration guide's steps, literally, as root on a host that runs the example project in
# threads mode (examples/deploy.yml). make bench times this against playbooks/site.yml.
# Four departures, each needed for anything to start here: Debian's redis-server unit gets
# PrivateUsers=false (it cannot work in an unprivileged container; the role does the same),
# the guide's units read the project's environment file (secret key, data directory), pip
# gets the CA file this machine's proxy needs (PIP_CERT, from the environment), and the worker
# is started again when it did not come up, as its operator would. The guide's worker unit is
# Type=forking without a PIDFile around a double-forking `--detach`: systemd may take the
# intermediate process for the main one, see it exit, run the guide's ExecStop (which fails:
# `celery worker` has no --stop) and kill the real worker, five times in a row at most.
set -euo pipefail
app=/srv/dhis_sync
venv=$app/venv
env_file=/etc/dhis_sync/dhis_sync.env

# Prérequis 1: Redis.
mkdir -p /etc/systemd/system/redis-server.service.d
printf '[Service]\nPrivateUsers=false\n' >/etc/systemd/system/redis-server.service.d/container.conf
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
systemctl start redis-server
[ "$(redis-cli ping)" = PONG ]

# Prérequis 2: the Python packages (unpinned, as the guide writes them).
"$venv/bin/pip" install -q celery redis django-celery-beat django-celery-results django-redis flower

# Étape 1.1: uncomment the Celery app in the package's __init__.py.
sed -i -e 's/^# from \.celery import app as celery_app/from .celery import app as celery_app/' \
  -e "s/^# __all__ = ('celery_app',)/__all__ = ('celery_app',)/" "$app/dhis_sync/__init__.py"

# Étapes 1.2, 1.3 and 2: the Celery section, the Redis cache, the two apps.
cat >>"$app/dhis_sync/settings.py" <<'PY'

# ===== CELERY CONFIGURATION =====
CELERY_BROKER_URL = 'redis://localhost:6379/0'
CELERY_RESULT_BACKEND = 'redis://localhost:6379/0'
CELERY_ACCEPT_CONTENT = ['json']
CELERY_TASK_SERIALIZER = 'json'
CELERY_RESULT_SERIALIZER = 'json'
CELERY_TIMEZONE = 'UTC'
CELERY_ENABLE_UTC = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = 30 * 60  # 30 minutes max par tâche

CACHES = {
    'default': {
        'BACKEND': 'django_redis.cache.RedisCache',
        'LOCATION': 'redis://127.0.0.1:6379/1',
        'OPTIONS': {
            'CLIENT_CLASS': 'django_redis.client.DefaultClient',
        }
    }
}

INSTALLED_APPS += ['django_celery_beat', 'django_celery_results']
PY

# Étape 3: the migrations, as the application's user with its environment.
(
  cd "$app"
  set -a && . "$env_file" && set +a
  runuser -u www-data -- "$venv/bin/python" manage.py migrate django_celery_beat
  runuser -u www-data -- "$venv/bin/python" manage.py migrate django_celery_results
) >/dev/null

# Étape 6: the guide's units (Type=forking with --detach, pid files under /var/run), and Flower's.
unit() {
  cat >"/etc/systemd/system/$1.service"
}
unit celery-worker <<UNIT
[Unit]
Description=Celery Worker for DHIS2 Sync
After=network.target redis.service

[Service]
Type=forking
User=www-data
Group=www-data
WorkingDirectory=$app
Environment="PATH=$venv/bin"
EnvironmentFile=$env_file
ExecStart=$venv/bin/celery -A dhis_sync worker \\
    --loglevel=info \\
    --logfile=/var/log/celery/worker.log \\
    --pidfile=/var/run/celery/worker.pid \\
    --detach
ExecStop=$venv/bin/celery -A dhis_sync worker --pidfile=/var/run/celery/worker.pid --stop
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
unit celery-beat <<UNIT
[Unit]
Description=Celery Beat for DHIS2 Sync
After=network.target redis.service

[Service]
Type=forking
User=www-data
Group=www-data
WorkingDirectory=$app
Environment="PATH=$venv/bin"
EnvironmentFile=$env_file
ExecStart=$venv/bin/celery -A dhis_sync beat \\
    --loglevel=info \\
    --logfile=/var/log/celery/beat.log \\
    --pidfile=/var/run/celery/beat.pid \\
    --scheduler django_celery_beat.schedulers:DatabaseScheduler \\
    --detach
ExecStop=/bin/kill -s TERM \$MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
unit celery-flower <<UNIT
[Unit]
Description=Flower for Celery
After=network.target

[Service]
Type=simple
User=www-data
Group=www-data
WorkingDirectory=$app
Environment="PATH=$venv/bin"
EnvironmentFile=$env_file
ExecStart=$venv/bin/celery -A dhis_sync flower --port=5555
Restart=always

[Install]
WantedBy=multi-user.target
UNIT

# Étape 6.2: directories, enable, start; the web side picks the settings up on restart.
mkdir -p /var/log/celery /var/run/celery
chown www-data:www-data /var/log/celery /var/run/celery
systemctl daemon-reload
systemctl enable -q celery-worker celery-beat celery-flower
systemctl start celery-worker celery-beat celery-flower
systemctl restart dhis-sync-web.service

# Vérification post-migration 1: the worker answers.
cd "$app"
set -a && . "$env_file" && set +a
for attempt in 1 2 3; do
  for _ in $(seq 20); do
    runuser -u www-data -- "$venv/bin/celery" -A dhis_sync inspect ping --timeout 2 >/dev/null 2>&1 && exit 0
    sleep 1
  done
  echo "guide.sh: the guide's worker did not come up (attempt $attempt), starting it again"
  systemctl reset-failed celery-worker
  systemctl restart celery-worker
done
echo "guide.sh: the guide's worker never answered ping" >&2
exit 1
