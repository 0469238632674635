"""Turn `django-admin startproject` + `startapp` output into one project shape (run on the test host).

    make_shape.py SHAPE DIR    (with the project's own virtualenv python; DIR holds that venv)

Each shape is Django's generated code plus the smallest change that gives it its shape, and one
app with @shared_task tasks: add (a round trip), tick (a row per run, for Beat), env (a
variable as the worker sees it), nap, paced (rate-limited) and wedge (a fault for the liveness
test). Nothing here resembles the example project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TASKS = """import gc
import os
import time

from celery import shared_task

from .models import Tick


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def tick() -> int:
    return Tick.objects.create().pk


@shared_task
def env(name: str) -> str:
    return os.environ.get(name, "")


@shared_task
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return 1


@shared_task(rate_limit="6/m")
def paced() -> int:
    return 1


@shared_task
def wedge() -> int:
    # Fault injection for the liveness test, in a threads-pool worker: its pool takes no more work,
    # so the tasks it receives stay reserved while its consumer keeps answering.
    from celery.concurrency.thread import TaskPool

    pools = [obj for obj in gc.get_objects() if isinstance(obj, TaskPool)]
    for pool in pools:
        pool.on_apply = lambda *args, **kwargs: None
    return len(pools)
"""
MODELS = """from django.db import models


class Tick(models.Model):
    at = models.DateTimeField(auto_now_add=True)
"""
WIRED_CELERY = """import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wired.settings")

app = Celery("wired")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""
WIRED_VIEWS = """from django.http import JsonResponse

from .tasks import add


def add_view(request):
    return JsonResponse({"result": add.delay(2, 3).get(timeout=30)})
"""


def run(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, *args], cwd=cwd, check=True)


def app(root: Path, package_dir: Path, name: str) -> None:
    """startapp NAME inside package_dir's parent, with the tasks and a model."""
    run("-m", "django", "startapp", name, cwd=package_dir.parent)
    (package_dir.parent / name / "tasks.py").write_text(TASKS)
    (package_dir.parent / name / "models.py").write_text(MODELS)


def main(shape: str, root: Path) -> None:
    django_admin = Path(sys.executable).parent / "django-admin"
    if shape == "plain":  # startproject, one app, INSTALLED_APPS as a tuple, no CACHES, no celery.py
        subprocess.run([django_admin, "startproject", "plain", str(root)], check=True)
        app(root, root / "plain", "jobs")
        settings = root / "plain/settings.py"
        settings.write_text(settings.read_text() + '\nINSTALLED_APPS = (*INSTALLED_APPS, "jobs")\n')
    elif shape == "shop":  # settings package read from the environment, package under src/
        (root / "src").mkdir()
        subprocess.run([django_admin, "startproject", "shop", str(root)], check=True)
        (root / "shop").rename(root / "src/shop")
        app(root, root / "src/shop", "jobs")
        package = root / "src/shop/settings"
        package.mkdir()
        (package / "__init__.py").write_text("")
        base = (root / "src/shop/settings.py").read_text()
        (root / "src/shop/settings.py").unlink()
        base = base.replace("from pathlib import Path", "import os\nfrom pathlib import Path")
        base = base.replace("SECRET_KEY = ", 'SECRET_KEY = os.environ["SHOP_SECRET_KEY"]\n_GENERATED_KEY = ')
        base = base.replace("BASE_DIR / 'db.sqlite3'", 'os.environ["SHOP_DB_PATH"]').replace(
            'BASE_DIR / "db.sqlite3"', 'os.environ["SHOP_DB_PATH"]'
        )
        base += '\nINSTALLED_APPS += ["jobs"]\nSHOP_DB_PASSWORD = os.environ["SHOP_DB_PASSWORD"]\n'
        (package / "base.py").write_text(base)
        (package / "production.py").write_text(
            'from .base import *  # noqa: F403\n\nDEBUG = False\nALLOWED_HOSTS = ["127.0.0.1"]\n'
            'LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}\n'
        )
    elif shape == "wired":  # its own celery.py pointing at AMQP and an rpc backend, and a web side
        subprocess.run([django_admin, "startproject", "wired", str(root)], check=True)
        app(root, root / "wired", "orders")
        (root / "wired/celery.py").write_text(WIRED_CELERY)
        (root / "wired/__init__.py").write_text('from .celery import app as celery_app\n\n__all__ = ("celery_app",)\n')
        (root / "orders/views.py").write_text(WIRED_VIEWS)
        settings = root / "wired/settings.py"
        settings.write_text(
            settings.read_text()
            + '\nINSTALLED_APPS += ["orders"]\nCELERY_BROKER_URL = "amqp://guest:guest@localhost:5672//"\n'
            + 'CELERY_RESULT_BACKEND = "rpc://"\nCELERY_TASK_ALWAYS_EAGER = False\n'
        )
        urls = root / "wired/urls.py"
        urls.write_text(
            urls.read_text()
            .replace("from django.urls import path", "from django.urls import path\nfrom orders.views import add_view")
            .replace(
                "path('admin/', admin.site.urls),", "path('admin/', admin.site.urls),\n    path('add/', add_view),"
            )
            .replace(
                'path("admin/", admin.site.urls),', 'path("admin/", admin.site.urls),\n    path("add/", add_view),'
            )
        )
    else:
        sys.exit(f"unknown shape {shape}")
    # Real migrations for the app's model, made by Django as a developer would.
    env = {**os.environ, "SHOP_SECRET_KEY": "x", "SHOP_DB_PATH": "/nonexistent", "SHOP_DB_PASSWORD": "x"}
    if shape == "shop":
        env.update(DJANGO_SETTINGS_MODULE="shop.settings.production", PYTHONPATH=str(root / "src"))
    app_name = "orders" if shape == "wired" else "jobs"
    subprocess.run([sys.executable, "manage.py", "makemigrations", app_name], cwd=root, env=env, check=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
