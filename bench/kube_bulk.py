"""Many objects through a real Kubernetes API server, fast: raw JSON requests
(no client models) on the ``kubernetes`` client's connection pool, from a
thread pool whose threads have entered the network namespace that reaches
the API server (``setns`` moves only the calling thread).

Used by bench/kube_scale.py to load 10,000 pods, their IPs (patched into
``status`` as a kubelet does) and 1,000 policies in minutes where per-object
``kubectl`` would take hours, and to make single timed writes.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client, config

CLONE_NEWNET = 0x40000000
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE = 500  # as the enforcer lists
COLLECTIONS = {
    "Namespace": "/api/v1/namespaces",
    "Pod": "/api/v1/pods",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies",
}
API_VERSIONS = {"Namespace": "v1", "Pod": "v1", "NetworkPolicy": "networking.k8s.io/v1"}

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread, and only it, into a named network namespace."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def netns_executor(netns: str, workers: int) -> ThreadPoolExecutor:
    """A thread pool whose threads live in ``netns``."""
    return ThreadPoolExecutor(workers, thread_name_prefix=f"netns-{netns}", initializer=enter_netns, initargs=(netns,))


def path_of(obj: dict, subresource: str = "") -> str:
    """The API path of an object (``kind`` and ``metadata`` set), or of one of its subresources."""
    meta, kind = obj["metadata"], obj["kind"]
    if kind == "Namespace":
        path = f"/api/v1/namespaces/{meta['name']}"
    else:
        collection = COLLECTIONS[kind].rsplit("/", 1)
        path = f"{collection[0]}/namespaces/{meta['namespace']}/{collection[1]}/{meta['name']}"
    return path + (f"/{subresource}" if subresource else "")


def collection_of(obj: dict) -> str:
    """Where to POST a new object."""
    return path_of(obj).rsplit("/", 1)[0]


def creatable(obj: dict) -> dict:
    """The object as a user creates it: apiVersion set, no status, a container image."""
    body = {k: v for k, v in obj.items() if k != "status"}
    body["apiVersion"] = API_VERSIONS[obj["kind"]]
    if obj["kind"] == "Pod":
        body["spec"] = {**body["spec"], "containers": [{**c, "image": PAUSE_IMAGE} for c in body["spec"]["containers"]]}
    return body


def status_patch(pod: dict) -> dict:
    """What a kubelet writes once the pod's sandbox has its IPs."""
    status = pod["status"]
    return {"status": {**status, "podIP": status["podIPs"][0]["ip"]}}


class Api:
    """Requests to the API server with an admin kubeconfig, made from threads in ``netns``."""

    def __init__(self, kubeconfig: Path, netns: str, workers: int = 24) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = workers
        self.host = cfg.host
        self.rest = client.ApiClient(cfg).rest_client
        self.pool = netns_executor(netns, workers)

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict:
        response = self.rest.request(
            method,
            self.host + path,
            body=body,
            _request_timeout=(5, 120),
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        data = response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data)

    def submit(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Future:
        return self.pool.submit(self._request, method, path, body, content_type)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict:
        return self.submit(method, path, body, content_type).result()

    def write(self, method: str, path: str, body: Any, content_type: str = "application/json") -> tuple[int, float]:
        """One write: the resourceVersion it made, and the monotonic time the call returned."""
        written = self.request(method, path, body, content_type)
        return int(written["metadata"]["resourceVersion"]), time.monotonic()

    def create(self, obj: dict) -> tuple[int, float]:
        return self.write("POST", collection_of(obj), creatable(obj))

    def patch(self, obj: dict, body: dict, subresource: str = "") -> tuple[int, float]:
        return self.write("PATCH", path_of(obj, subresource), body, MERGE_PATCH)

    def many(self, calls: list[tuple[str, str, Any, str]], what: str, report_every: float = 10.0) -> float:
        """Run ``(method, path, body, content type)`` calls on the pool; print progress; seconds taken."""
        started = last = time.monotonic()
        futures = [self.submit(*call) for call in calls]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            now = time.monotonic()
            if now - last >= report_every:
                print(f"    {what}: {done}/{len(calls)}, {done / (now - started):.0f}/s", flush=True)
                last = now
        return time.monotonic() - started

    def list_all(self) -> tuple[list[dict], float]:
        """Every Namespace, Pod and NetworkPolicy, listed in pages as the enforcer lists them; and seconds taken."""
        started = time.monotonic()
        objects = []
        for kind, collection in COLLECTIONS.items():
            token = ""
            while True:
                page = self.request("GET", f"{collection}?limit={LIST_PAGE}" + (f"&continue={quote(token)}" if token else ""))
                objects += [{"kind": kind, **item} for item in page["items"]]
                token = page["metadata"].get("continue")
                if not token:
                    break
        return objects, time.monotonic() - started


def load(api: Api, objects: list[dict]) -> dict[str, float]:
    """Create namespaces, then pods, then patch every pod's IPs, then create
    policies, each step on the whole pool; seconds per step."""
    kinds = {kind: [o for o in objects if o["kind"] == kind] for kind in ("Namespace", "Pod", "NetworkPolicy")}
    steps = [
        ("namespaces", [("POST", collection_of(o), creatable(o), "application/json") for o in kinds["Namespace"]]),
        ("pods", [("POST", collection_of(o), creatable(o), "application/json") for o in kinds["Pod"]]),
        ("pod IPs", [("PATCH", path_of(o, "status"), status_patch(o), MERGE_PATCH) for o in kinds["Pod"]]),
        ("policies", [("POST", collection_of(o), creatable(o), "application/json") for o in kinds["NetworkPolicy"]]),
    ]
    return {what: api.many(calls, what) for what, calls in steps}
