"""A real Kubernetes control plane on loopback for tests: etcd and
kube-apiserver built from Go modules by scripts/build-kube, with generated
certificates. Gives an admin kubeconfig (client cert in system:masters) and,
for the enforcer, a kubeconfig holding a ServiceAccount token bound by
manifests/base/rbac.yaml, so tests run it with exactly that identity.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kube_bin() -> Path:
    result = subprocess.run([str(REPO / "scripts" / "build-kube")], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-kube failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class ControlPlane:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = kube_bin()
        self.etcd_port, self.etcd_peer_port, self.api_port = _free_port(), _free_port(), _free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
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
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=nftpolicy-test-ca",
                 "-keyout", str(r / "ca.key"), "-out", str(r / "ca.crt"))
        (r / "apiserver.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        (r / "admin.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject in (("apiserver", "/CN=kube-apiserver"), ("admin", "/O=system:masters/CN=test-admin")):
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(r / f"{name}.key"),
                     "-out", str(r / f"{name}.csr"))
            _openssl("x509", "-req", "-in", str(r / f"{name}.csr"), "-CA", str(r / "ca.crt"), "-CAkey", str(r / "ca.key"),
                     "-CAcreateserial", "-days", "2", "-extfile", str(r / f"{name}.ext"), "-out", str(r / f"{name}.crt"))
        _openssl("genrsa", "-out", str(r / "sa.key"), "2048")
        _openssl("rsa", "-in", str(r / "sa.key"), "-pubout", "-out", str(r / "sa.pub"))

    def start_etcd(self) -> None:
        log = open(self.root / "etcd.log", "a")
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        self.etcd = subprocess.Popen(
            [str(self.bin / "etcd"), "--name", "test", "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--listen-metrics-urls", ""],
            stdout=log, stderr=subprocess.STDOUT)
        self._wait(lambda: subprocess.run(["curl", "-fsS", f"{client}/health"], capture_output=True).returncode == 0,
                   "etcd", self.etcd)

    def start_apiserver(self) -> None:
        r = self.root
        log = open(r / "apiserver.log", "a")
        self.apiserver = subprocess.Popen(
            [str(self.bin / "kube-apiserver"), "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
             "--bind-address", "127.0.0.1", "--secure-port", str(self.api_port), "--advertise-address", "127.0.0.1",
             "--endpoint-reconciler-type", "none",
             "--tls-cert-file", str(r / "apiserver.crt"), "--tls-private-key-file", str(r / "apiserver.key"),
             "--client-ca-file", str(r / "ca.crt"),
             "--service-account-issuer", "https://kubernetes.default.svc",
             "--service-account-key-file", str(r / "sa.pub"), "--service-account-signing-key-file", str(r / "sa.key"),
             "--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.96.0.0/16",
             "--cert-dir", str(r / "apiserver-certs")],
            stdout=log, stderr=subprocess.STDOUT)
        self._wait(self._ready, "kube-apiserver", self.apiserver, timeout=120)

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
        return subprocess.run(["curl", "-fsS", "--cacert", str(r / "ca.crt"), "--cert", str(r / "admin.crt"),
                               "--key", str(r / "admin.key"), f"{self.server}/readyz"], capture_output=True).returncode == 0

    @staticmethod
    def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready")
            time.sleep(0.1)

    def _kubeconfigs(self) -> None:
        r = self.root
        for args in (["set-cluster", "test", "--server", self.server, "--certificate-authority", str(r / "ca.crt"), "--embed-certs"],
                     ["set-credentials", "admin", "--client-certificate", str(r / "admin.crt"), "--client-key", str(r / "admin.key"), "--embed-certs"],
                     ["set-context", "test", "--cluster", "test", "--user", "admin"], ["use-context", "test"]):
            self._kubectl_raw(["config", "--kubeconfig", str(self.admin_kubeconfig), *args])
        self.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "rbac.yaml"))
        token = self.kubectl("create", "token", "nftpolicy", "-n", "nftpolicy-system", "--duration", "24h").strip()
        config = yaml.safe_load(self.admin_kubeconfig.read_text())
        config["users"] = [{"name": "nftpolicy", "user": {"token": token}}]
        config["contexts"] = [{"name": "test", "context": {"cluster": "test", "user": "nftpolicy"}}]
        self.enforcer_kubeconfig.write_text(yaml.safe_dump(config))

    # --- kubectl -----------------------------------------------------------

    def _kubectl_raw(self, args: list[str], input: str | None = None) -> str:
        result = subprocess.run([str(self.bin / "kubectl"), *args], input=input, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def kubectl(self, *args: str, input: str | None = None, as_enforcer: bool = False) -> str:
        config = self.enforcer_kubeconfig if as_enforcer else self.admin_kubeconfig
        return self._kubectl_raw(["--kubeconfig", str(config), *args], input=input)

    def apply(self, *objects: dict) -> int:
        """``kubectl apply -f -``; returns the highest resourceVersion it wrote."""
        out = self.kubectl("apply", "-o", "json", "-f", "-", input=yaml.safe_dump_all(objects))
        body = json.loads(out)
        items = body.get("items", [body])
        return max(int(i["metadata"]["resourceVersion"]) for i in items)
