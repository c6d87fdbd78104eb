"""``/healthz`` and ``/readyz`` for the kubelet's probes, ``/metrics`` for Prometheus.

- healthz: the sync loop is turning (it looked at its inputs in the last
  ``stale_after`` seconds). A stuck enforcer is restarted; its rules stay in
  the kernel meanwhile.
- readyz: a sync has committed, the last one did not fail, and the cluster
  state is current (the API watch, or the source files, have no error).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from enforcer.kernel import Kernel
from enforcer.observability.metrics import metrics
from enforcer.status import EnforcerStatus


def health(status: EnforcerStatus, stale_after: float) -> tuple[bool, str]:
    age = time.monotonic() - status.last_loop
    if age > stale_after:
        return False, f"sync loop stalled for {age:.0f}s"
    return True, "ok"


def readiness(status: EnforcerStatus) -> tuple[bool, str]:
    if status.sync_count == 0:
        return False, "no sync has committed yet"
    if status.last_error:
        return False, f"last sync failed: {status.last_error}"
    if status.source_error:
        return False, f"cluster state not current: {status.source_error}"
    return True, "ok"


def serve(
    port: int, status: Callable[[], EnforcerStatus], kernel: Kernel, stop: threading.Event, stale_after: float = 30.0
) -> None:
    """``status``: the enforcer's current snapshot; ``kernel``: where /metrics reads the rule counters."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            checks = {
                "/healthz": lambda s: health(s, stale_after),
                "/readyz": readiness,
                "/metrics": lambda s: (True, metrics(s, kernel).rstrip("\n")),
            }
            if self.path not in checks:
                self.send_error(404)
                return
            ok, message = checks[self.path](status())
            body = (message + "\n").encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line
            pass

    server = ThreadingHTTPServer(("", port), Handler)
    server.timeout = 0.5
    threading.Thread(target=lambda: (stop.wait(), server.shutdown()), daemon=True).start()
    server.serve_forever(poll_interval=0.5)
