"""A real Kubernetes control plane for tests: etcd and kube-apiserver built
from Go modules by scripts/build-kube, with generated certificates, running
in a network namespace of the test bed's underlay (so enforcers in the node
namespaces reach it, and the host's network is never touched). Gives an admin kubeconfig (client cert in system:masters) and,
for the enforcer, a kubeconfig holding a ServiceAccount token bound by
manifests/base/rbac.yaml, so tests run it with exactly that identity.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from enforcer.testbed.simulation import FACT_TIMEOUT

REPO = Path(__file__).resolve().parent.parent


def kube_bin() -> Path:
    result = subprocess.run([str(REPO / "scripts" / "build-kube")], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-kube failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


ETCD_PORT, ETCD_PEER_PORT, API_PORT = 2379, 2380, 6443


class ControlPlane:
    def __init__(self, root: Path, netns: str, address: str) -> None:
        self.root = root
        self.netns = netns
        self.address = address
        self.bin = kube_bin()
        self.server = f"https://{address}:{API_PORT}"
        self.admin_kubeconfig = root / "admin.kubeconfig"
        self.enforcer_kubeconfig = root / "enforcer.kubeconfig"
        self.etcd: subprocess.Popen | None = None
        self.apiserver: subprocess.Popen | None = None

    # --- lifecycle -------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        try:
            self._certificates()
            self.start_etcd()
            self.start_apiserver()
            self._kubeconfigs()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.stop_apiserver()
        for proc in (self.etcd,):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()

    def _certificates(self) -> None:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=nftpolicy-test-ca",
            "-keyout",
            str(r / "ca.key"),
            "-out",
            str(r / "ca.crt"),
        )
        (r / "apiserver.ext").write_text(f"subjectAltName=IP:{self.address},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        (r / "admin.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject in (("apiserver", "/CN=kube-apiserver"), ("admin", "/O=system:masters/CN=test-admin")):
            _openssl(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                str(r / f"{name}.key"),
                "-out",
                str(r / f"{name}.csr"),
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                str(r / f"{name}.csr"),
                "-CA",
                str(r / "ca.crt"),
                "-CAkey",
                str(r / "ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                str(r / f"{name}.ext"),
                "-out",
                str(r / f"{name}.crt"),
            )
        _openssl("genrsa", "-out", str(r / "sa.key"), "2048")
        _openssl("rsa", "-in", str(r / "sa.key"), "-pubout", "-out", str(r / "sa.pub"))

    def start_etcd(self) -> None:
        log = open(self.root / "etcd.log", "a")
        client, peer = f"http://127.0.0.1:{ETCD_PORT}", f"http://127.0.0.1:{ETCD_PEER_PORT}"
        self.etcd = subprocess.Popen(
            [
                *self._in_ns,
                str(self.bin / "etcd"),
                "--name",
                "test",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"test={peer}",
                "--listen-metrics-urls",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait(
            lambda: subprocess.run([*self._in_ns, "curl", "-fsS", f"{client}/health"], capture_output=True).returncode == 0,
            "etcd",
            self.etcd,
        )

    def start_apiserver(self) -> None:
        r = self.root
        log = open(r / "apiserver.log", "a")
        self.apiserver = subprocess.Popen(
            [
                *self._in_ns,
                str(self.bin / "kube-apiserver"),
                "--etcd-servers",
                f"http://127.0.0.1:{ETCD_PORT}",
                "--bind-address",
                self.address,
                "--secure-port",
                str(API_PORT),
                "--advertise-address",
                self.address,
                "--endpoint-reconciler-type",
                "none",
                "--tls-cert-file",
                str(r / "apiserver.crt"),
                "--tls-private-key-file",
                str(r / "apiserver.key"),
                "--client-ca-file",
                str(r / "ca.crt"),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(r / "sa.pub"),
                "--service-account-signing-key-file",
                str(r / "sa.key"),
                "--authorization-mode",
                "RBAC",
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--cert-dir",
                str(r / "apiserver-certs"),
                # No controller-manager creates default ServiceAccounts here; pods need none.
                "--disable-admission-plugins",
                "ServiceAccount",
                # Compact etcd often and serve watches from it, so that a watch resumed
                # from an old version really meets 410 Gone.
                "--etcd-compaction-interval",
                "5s",
                "--watch-cache=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait(self._ready, "kube-apiserver", self.apiserver)

    def stop_apiserver(self) -> None:
        if self.apiserver and self.apiserver.poll() is None:
            self.apiserver.terminate()
            try:
                self.apiserver.wait(10)
            except subprocess.TimeoutExpired:
                self.apiserver.kill()
                self.apiserver.wait()
        self.apiserver = None

    def _ready(self) -> bool:
        r = self.root
        return (
            subprocess.run(
                [
                    *self._in_ns,
                    "curl",
                    "-fsS",
                    "--cacert",
                    str(r / "ca.crt"),
                    "--cert",
                    str(r / "admin.crt"),
                    "--key",
                    str(r / "admin.key"),
                    f"{self.server}/readyz",
                ],
                capture_output=True,
            ).returncode
            == 0
        )

    @staticmethod
    def _wait(check, what: str, proc: subprocess.Popen, timeout: float = FACT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready")
            time.sleep(0.1)

    def _kubeconfigs(self) -> None:
        r = self.root
        for args in (
            ["set-cluster", "test", "--server", self.server, "--certificate-authority", str(r / "ca.crt"), "--embed-certs"],
            [
                "set-credentials",
                "admin",
                "--client-certificate",
                str(r / "admin.crt"),
                "--client-key",
                str(r / "admin.key"),
                "--embed-certs",
            ],
            ["set-context", "test", "--cluster", "test", "--user", "admin"],
            ["use-context", "test"],
        ):
            self._kubectl_raw(["config", "--kubeconfig", str(self.admin_kubeconfig), *args])
        self.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "rbac.yaml"))
        self.kubectl("apply", "--server-side", "-k", str(REPO / "manifests" / "crds" / "standard"))
        self.kubectl("wait", "--for=condition=Established", "crd/clusternetworkpolicies.policy.networking.k8s.io")
        token = self.kubectl("create", "token", "nftpolicy", "-n", "nftpolicy-system", "--duration", "24h").strip()
        config = yaml.safe_load(self.admin_kubeconfig.read_text())
        config["users"] = [{"name": "nftpolicy", "user": {"token": token}}]
        config["contexts"] = [{"name": "test", "context": {"cluster": "test", "user": "nftpolicy"}}]
        self.enforcer_kubeconfig.write_text(yaml.safe_dump(config))

    # --- kubectl -----------------------------------------------------------

    @property
    def _in_ns(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def _kubectl_raw(self, args: list[str], input: str | None = None) -> str:
        result = subprocess.run([*self._in_ns, str(self.bin / "kubectl"), *args], input=input, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        if not check:  # stdout and stderr together, whatever the exit code
            result = subprocess.run(
                [*self._in_ns, str(self.bin / "kubectl"), "--kubeconfig", str(self.admin_kubeconfig), *args],
                input=input,
                capture_output=True,
                text=True,
            )
            return result.stdout + result.stderr
        return self._kubectl_raw(["--kubeconfig", str(self.admin_kubeconfig), *args], input=input)

    def resource_version(self) -> int:
        """The cluster's newest resourceVersion (etcd's revision)."""
        return int(json.loads(self.kubectl("get", "--raw", "/api/v1/namespaces?limit=1"))["metadata"]["resourceVersion"])

    def compacted(self, version: int) -> bool:
        """Whether etcd's history no longer holds ``version``: a watch resumed from it gets 410 Gone."""
        out = self.kubectl(
            "get", "--raw", f"/api/v1/namespaces?limit=1&resourceVersion={version}&resourceVersionMatch=Exact", check=False
        )
        return "Expired" in out or "too old resource version" in out

    def apply(self, *objects: dict) -> int:
        """``kubectl apply -f -``; returns the highest resourceVersion it wrote."""
        # JSON, not YAML: kubectl's YAML 1.1 would read a namespace called "y" as a boolean.
        out = self.kubectl(
            "apply", "-o", "json", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        )
        body = json.loads(out)
        items = body.get("items", [body])
        return max(int(i["metadata"]["resourceVersion"]) for i in items)


SENTINEL_NS = "nftpolicy-test-sentinel"
ORDER = {"Namespace": 0, "Pod": 1, "NetworkPolicy": 2, "ClusterNetworkPolicy": 3}  # the kinds written, in apply order


class ApiCluster:
    """The test bed's cluster state written through a real API server, as users
    and the kubelet write it: objects by ``kubectl apply``, pod IPs by patching
    ``status``, deletions by ``kubectl delete``. The enforcers watch it with the
    least-privilege identity of manifests/base/rbac.yaml.

    To know when an enforcer has seen everything written, each write ends by
    touching one sentinel object per watched kind (a namespace, a pod without
    a node, a policy and a cluster policy that select nothing); an enforcer whose status shows it
    has applied each sentinel's resourceVersion has applied all before it.
    """

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane
        self.written: dict[tuple[str, str], dict] = {}
        self.marks: dict[str, int] = {}
        self.generation = 0
        self.cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SENTINEL_NS}})

    def enforcer_args(self) -> list[str]:
        return ["--kubeconfig", str(self.cp.enforcer_kubeconfig)]

    @staticmethod
    def _key(obj: dict) -> tuple[str, str]:
        meta = obj["metadata"]
        return obj["kind"], f"{meta.get('namespace', '')}/{meta['name']}"

    def write(self, objects: list[dict]) -> None:
        wanted = {self._key(o): o for o in objects if o["kind"] in ORDER}
        for key in [k for k in self.written if k not in wanted]:
            kind, name = key
            ns, name = name.split("/")
            self.cp.kubectl(
                "delete",
                kind.lower(),
                name,
                *(["-n", ns] if ns else []),
                "--grace-period=0",
                "--force",
                "--ignore-not-found",
                "--wait=false",
            )
            del self.written[key]
        changed = [o for k, o in wanted.items() if self.written.get(k) != o]
        specs = [{k: v for k, v in o.items() if k != "status"} for o in changed]
        for spec in specs:
            if spec["kind"] == "Pod":
                spec["spec"] = {
                    **spec["spec"],
                    "containers": [{**c, "image": "registry.k8s.io/pause:3.10"} for c in spec["spec"]["containers"]],
                }
        if specs:
            self.cp.apply(*sorted(specs, key=lambda o: ORDER[o["kind"]]))
        for o in changed:
            if o["kind"] == "Pod" and o.get("status", {}).get("podIPs"):
                meta = o["metadata"]
                self.cp.kubectl(
                    "patch",
                    "pod",
                    meta["name"],
                    "-n",
                    meta["namespace"],
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    json.dumps({"status": o["status"] | {"podIP": o["status"]["podIPs"][0]["ip"]}}),
                )
            self.written[self._key(o)] = o
        self._mark()

    def _mark(self) -> None:
        self.generation += 1
        mark = {"nftpolicy.test/generation": str(self.generation)}
        self.marks = {
            "Namespace": self.cp.apply(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SENTINEL_NS, "annotations": mark}}
            ),
            "Pod": self.cp.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "sentinel", "namespace": SENTINEL_NS, "annotations": mark},
                    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
                }
            ),
            "NetworkPolicy": self.cp.apply(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "sentinel", "namespace": SENTINEL_NS, "annotations": mark},
                    "spec": {"podSelector": {"matchLabels": {"nftpolicy.test/none": "none"}}},
                }
            ),
            "ClusterNetworkPolicy": self.cp.apply(
                {
                    "apiVersion": "policy.networking.k8s.io/v1beta1",
                    "kind": "ClusterNetworkPolicy",
                    "metadata": {"name": "nftpolicy-test-sentinel", "annotations": mark},
                    "spec": {
                        "tier": "Baseline",
                        "priority": 1000,
                        "subject": {"pods": {"podSelector": {"matchLabels": {"nftpolicy.test/none": "none"}}}},
                    },
                }
            ),
        }

    def in_force(self, status: dict) -> bool:
        try:
            seen = json.loads(status.get("source") or "{}")
        except ValueError:
            return False
        return all(seen.get(kind, 0) >= rv for kind, rv in self.marks.items())
