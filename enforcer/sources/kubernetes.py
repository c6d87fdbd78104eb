"""Cluster state from the Kubernetes API: list, then watch, Namespaces, Pods,
NetworkPolicies, ClusterNetworkPolicies and Nodes (their labels and addresses:
ClusterNetworkPolicy ``nodes`` peers). The only module that imports the
``kubernetes`` client.

- Each kind is listed once, then watched from the list's resourceVersion;
  a watch that ends resumes from the last version seen (bookmarks included).
- 410 Gone (the version is too old): list again and replace that kind's
  cache, so deletions missed meanwhile are seen.
- Connection errors: retry with exponential backoff. The cache, and so every
  rule in the kernel, stays as it is while the API is unreachable.
- No state is offered until every kind has been listed once: a node that
  knows its pods but not yet the policies must not program "no policies".
- ClusterNetworkPolicy is a CRD: while it is not installed (404), there are
  none, which is what the kind's first listing then says; the listing is
  retried with backoff, so installing the CRD later is noticed.

Objects are parsed into the engine's slim dataclasses as they arrive (labels,
IPs, ports; the rest of each object is dropped), straight from the JSON, so
no client model objects are built.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Iterator

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from rules.load import (
    InvalidObject,
    parse_cluster_network_policy,
    parse_namespace,
    parse_network_policy,
    parse_node,
    parse_pod,
)
from rules.model import ClusterState

log = logging.getLogger("nftpolicy.api")

LIST_PAGE = 500  # objects per list page, as client-go's reflector asks
WATCH_SECONDS = int(os.environ.get("NFTPOLICY_WATCH_SECONDS", "300"))  # the server ends each watch after this
CNP_GROUP, CNP_VERSION, CNP_PLURAL = "policy.networking.k8s.io", "v1beta1", "clusternetworkpolicies"


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """From a kubeconfig file, or the pod's service account when None."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


def _int(version: str | None) -> int:
    """resourceVersions are opaque, but etcd's are integers; 0 when not."""
    try:
        return int(version or 0)
    except ValueError:
        return 0


_gc_pausers = 0
_gc_lock = threading.Lock()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cycle collector off while a list page is parsed: parsing makes
    hundreds of thousands of short-lived, acyclic objects, and collecting them
    as they come costs 40% of the parse. Reference counting still frees them.
    Counted, since the kinds list in parallel threads."""
    global _gc_pausers
    with _gc_lock:
        if _gc_pausers == 0:
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()


class _Kind:
    def __init__(self, kind: str, list_fn: Callable, parse: Callable[[dict], Any], optional: bool = False) -> None:
        """``optional``: a CRD that may not be installed; absent, the kind has no objects."""
        self.kind, self.list_fn, self.parse, self.optional = kind, list_fn, parse, optional


class ApiSource:
    def __init__(self, api: client.ApiClient, max_backoff: float = 30.0) -> None:
        core, net, custom = client.CoreV1Api(api), client.NetworkingV1Api(api), client.CustomObjectsApi(api)
        self.kinds = [
            _Kind("Namespace", core.list_namespace, parse_namespace),
            _Kind("Pod", core.list_pod_for_all_namespaces, parse_pod),
            _Kind("NetworkPolicy", net.list_network_policy_for_all_namespaces, parse_network_policy),
            _Kind(
                "ClusterNetworkPolicy",
                functools.partial(custom.list_cluster_custom_object, CNP_GROUP, CNP_VERSION, CNP_PLURAL),
                parse_cluster_network_policy,
                optional=True,
            ),
            _Kind("Node", core.list_node, parse_node),
        ]
        self.max_backoff = max_backoff
        self._cache: dict[str, dict[str, Any]] = {k.kind: {} for k in self.kinds}
        self._listed: set[str] = set()
        self._lock = threading.Lock()
        self._version = 0  # bumped on every change to the cache
        # What changed since the last state offered: pods by key (None: deleted),
        # and whether any namespace or policy did. A new state is the last one
        # with these applied, so a watch event costs what it changes.
        self._pod_changes: dict[str, Any] = {}
        self._others_changed = False
        self._offered = 0
        self._errors: dict[str, str] = {}
        self._seen: dict[str, int] = {k.kind: 0 for k in self.kinds}  # newest resourceVersion applied, per kind
        self.state: ClusterState | None = None
        self.loaded: str | None = None
        self.changed_at: float | None = None  # when the oldest change in ``state`` reached the cache
        self._first_unoffered: float | None = None
        self._wake: Callable[[], None] = lambda: None

    # --- what the daemon reads ---------------------------------------------

    @property
    def error(self) -> str | None:
        with self._lock:
            return "; ".join(f"{k}: {e}" for k, e in sorted(self._errors.items())) or None

    def poll(self) -> bool:
        """A new state when the cache changed and every kind has been listed.
        Versions seen without a change show in ``loaded`` all the same: the
        state in force includes them."""
        with self._lock:
            if len(self._listed) < len(self.kinds):
                return False
            if self._version == self._offered:
                if self.state is not None:
                    self.loaded = json.dumps(self._seen, sort_keys=True)
                return False
            self._offered = self._version
            self.changed_at, self._first_unoffered = self._first_unoffered, None
            pods, self._pod_changes = self._pod_changes, {}
            others, self._others_changed = self._others_changed, False
            first = self.state is None
            if first:
                pods = dict(self._cache["Pod"])
            if first or others:
                namespaces = list(self._cache["Namespace"].values())
                policies = list(self._cache["NetworkPolicy"].values())
                cluster_policies = list(self._cache["ClusterNetworkPolicy"].values())
                nodes = list(self._cache["Node"].values())
            seen = dict(self._seen)
        if first:
            self.state = ClusterState.build(namespaces, pods.values(), policies, nodes, cluster_policies)
        else:
            assert self.state is not None
            state = self.state.with_pods(
                [p for p in pods.values() if p is not None], [key for key, p in pods.items() if p is None]
            )
            self.state = state.with_objects(namespaces, policies, cluster_policies, nodes) if others else state
        self.loaded = json.dumps(seen, sort_keys=True)  # what the state includes, per kind
        return True

    def start(self, stop: threading.Event, wake: Callable[[], None] = lambda: None) -> None:
        self._wake = wake
        for kind in self.kinds:
            threading.Thread(target=self._run, args=(kind, stop), name=f"watch-{kind.kind}", daemon=True).start()

    # --- list and watch ------------------------------------------------------

    def _parse(self, kind: _Kind, raw: dict) -> tuple[str, Any] | None:
        raw = {"kind": kind.kind, **raw}
        meta = raw.get("metadata", {})
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        try:
            return key, kind.parse(raw)
        except InvalidObject as e:
            # The API accepted it, we cannot read it: keep what we had, and say so.
            with self._lock:
                self._errors[f"{kind.kind} {key}"] = str(e)
            log.error("%s %s: cannot use it, keeping the previous version if any: %s", kind.kind, key, e)
            return None

    def _relist(self, kind: _Kind) -> str:
        """List in pages (one consistent snapshot), so the raw JSON held at once stays bounded."""
        fresh, token = {}, None
        while True:
            response = kind.list_fn(limit=LIST_PAGE, _continue=token, _preload_content=False, _request_timeout=(5, 60))
            with _gc_paused():
                body = json.loads(response.data)
                for raw in body.pop("items", None) or ():
                    parsed = self._parse(kind, raw)
                    if parsed:
                        fresh[parsed[0]] = parsed[1]
            token = body["metadata"].get("continue")
            if not token:
                break
        with self._lock:
            old = self._cache[kind.kind]
            kept = {k: v for k, v in old.items() if k not in fresh and f"{kind.kind} {k}" in self._errors}
            # Equal objects keep their identity: the renderer reuses what it built from them.
            fresh = {k: old[k] if old.get(k) == v else v for k, v in fresh.items()}
            new = self._cache[kind.kind] = {**kept, **fresh}
            first_listing = kind.kind not in self._listed  # even an empty list is news then
            self._listed.add(kind.kind)
            self._note(
                kind.kind,
                {k: v for k, v in new.items() if old.get(k) is not v},
                [k for k in old if k not in new],
                force=first_listing,
            )
            self._seen[kind.kind] = _int(body["metadata"]["resourceVersion"])
        self._wake()
        log.info("listed %d %s objects", len(fresh), kind.kind)
        return body["metadata"]["resourceVersion"]

    def _apply(self, kind: _Kind, event: dict) -> None:
        raw, kind_name = event["object"], kind.kind
        meta = raw.get("metadata", {})
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        parsed = None if event["type"] == "DELETED" else self._parse(kind, raw)
        with self._lock:
            cache = self._cache[kind_name]
            if event["type"] == "DELETED":
                if cache.pop(key, None) is not None:
                    self._note(kind_name, {}, [key])
                self._errors.pop(f"{kind_name} {key}", None)
            elif parsed:
                # Most updates (status conditions, annotations, heartbeats) change
                # nothing the engine keeps: no new state, no sync.
                if cache.get(key) != parsed[1]:
                    cache[key] = parsed[1]
                    self._note(kind_name, {key: parsed[1]}, [])
                self._errors.pop(f"{kind_name} {key}", None)
            self._seen[kind_name] = max(self._seen[kind_name], _int(meta.get("resourceVersion")))
        self._wake()

    def _note(self, kind: str, changed: dict[str, Any], removed: list[str], force: bool = False) -> None:
        """Under the lock: objects of a kind changed since the last state offered."""
        if not (changed or removed or force):
            return
        if kind == "Pod":
            self._pod_changes.update(changed)
            self._pod_changes.update(dict.fromkeys(removed))
        else:
            self._others_changed = True
        self._version += 1
        if self._first_unoffered is None:
            self._first_unoffered = time.monotonic()

    def _watch(self, kind: _Kind, version: str, stop: threading.Event) -> str | None:
        """Follow the watch until it ends; the version to resume from, or None to relist."""
        response = kind.list_fn(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            _request_timeout=(5, WATCH_SECONDS + 30),
        )
        try:
            for line in iter_resp_lines(response):
                if stop.is_set():
                    return version
                event = json.loads(line)
                if event["type"] == "ERROR":
                    if event["object"].get("code") == 410:
                        return None
                    raise ApiException(status=event["object"].get("code"), reason=event["object"].get("message"))
                version = event["object"].get("metadata", {}).get("resourceVersion", version)
                if event["type"] != "BOOKMARK":
                    self._apply(kind, event)
        finally:
            response.release_conn()
        return version

    def _run(self, kind: _Kind, stop: threading.Event) -> None:
        version: str | None = None
        backoff = 0.0
        while not stop.is_set():
            try:
                if version is None:
                    version = self._relist(kind)
                version = self._watch(kind, version, stop)
                if version is None:
                    log.info("%s watch expired (410 Gone): listing again", kind.kind)
                backoff = 0.0
                with self._lock:
                    self._errors.pop(kind.kind, None)
            except ApiException as e:
                if e.status == 410:
                    version = None
                    continue
                if e.status == 404 and kind.optional:
                    backoff, version = self._not_installed(kind, backoff), None
                else:
                    backoff = self._failed(kind, f"API error {e.status}: {e.reason}", backoff)
            except Exception as e:  # connection refused, reset, timeout: the API is away
                backoff = self._failed(kind, f"API unreachable: {e.__class__.__name__}: {e}", backoff)
            if backoff:
                stop.wait(backoff)

    def _not_installed(self, kind: _Kind, backoff: float) -> float:
        """An optional kind whose CRD is not installed has no objects; look again later."""
        with self._lock:
            old = self._cache[kind.kind]
            self._cache[kind.kind] = {}
            first_listing = kind.kind not in self._listed
            self._listed.add(kind.kind)
            self._note(kind.kind, {}, list(old), force=first_listing)
        if first_listing or old:
            log.info("%s: not installed in this cluster (404): none to enforce; looking again with backoff", kind.kind)
        self._wake()
        return min(self.max_backoff, max(1.0, backoff * 2)) * random.uniform(0.8, 1.2)

    def _failed(self, kind: _Kind, message: str, backoff: float) -> float:
        with self._lock:
            self._errors[kind.kind] = message + " (enforcing the last known state)"
        log.warning("%s: %s", kind.kind, message)
        return min(self.max_backoff, max(0.5, backoff * 2)) * random.uniform(0.8, 1.2)
