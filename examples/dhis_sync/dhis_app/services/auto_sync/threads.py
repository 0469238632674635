"""The pre-migration auto-sync: a Python thread per trigger (lost on restart)."""

import threading
import uuid

from .sync import run_sync


def trigger_auto_sync_async(config_id: int) -> str:
    key = f"thread-{uuid.uuid4()}"
    threading.Thread(target=run_sync, args=(config_id, key, "threads"), daemon=True).start()
    return key
