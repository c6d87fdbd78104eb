"""The example manifests in manifests/examples, checked against flows worked
out by hand from the Kubernetes NetworkPolicy spec.

The expectations below were not produced by running the evaluator: each one
is reasoned from the spec (isolation per direction, peers and ports of a rule,
AND inside one peer, named ports resolving on the destination pod, ipBlock
``except``, a pod's own node always reaching it, hostNetwork pods being node
traffic that selectors never match). They are an independent check of
``rules.evaluate`` and of the ``nftpolicy`` CLI.

The cluster (manifests/examples/cluster.yaml), for reading the tables:

    node-1 192.168.56.11                    node-2 192.168.56.12
    kube-system/coredns-a      dns 53        kube-system/coredns-b         dns 53
    monitoring/node-exporter-n1 hostNetwork  kube-system/metrics-server-0  https 10250
    monitoring/prometheus-0                  frontend/web-2                http 8080
    frontend/web-1             http 8080     frontend/admin-ui-0 (v4 only) http 3000, role=uploader
    backend/api-v1-0           http 8080     backend/api-v2-0              http 9090, role=uploader
                               metrics 9100                                metrics 9100
    backend/media-relay-0 (v4) metrics 9300  backend/transcoder-0          metrics 8081, role=transcoder, app=worker
    db/postgres-0              5432          staging/web-canary-0          http 8080, app=web

Namespaces: frontend team=web, backend team=api, monitoring purpose=monitoring,
staging team=qa, kube-system and db unlabelled (bar kubernetes.io/metadata.name).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataplane import Dataplane
from enforcer.cli import main
from rules.evaluate import verdict
from enforcer.sources.manifests import load_state
from rules.model import L4Protocol

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"
CLUSTER = EXAMPLES / "cluster.yaml"

# Pods, by key.
DNS_A = "kube-system/coredns-a"  # node-1
DNS_B = "kube-system/coredns-b"  # node-2
METRICS_SERVER = "kube-system/metrics-server-0"  # node-2
EXPORTER = "monitoring/node-exporter-n1"  # node-1, hostNetwork, address 192.168.56.11
PROM = "monitoring/prometheus-0"  # node-1
WEB1 = "frontend/web-1"  # node-1
WEB2 = "frontend/web-2"  # node-2
ADMIN = "frontend/admin-ui-0"  # node-2, IPv4 only
API1 = "backend/api-v1-0"  # node-1
API2 = "backend/api-v2-0"  # node-2
RELAY = "backend/media-relay-0"  # node-1, IPv4 only
TRANSCODER = "backend/transcoder-0"  # node-2
PG = "db/postgres-0"  # node-1
CANARY = "staging/web-canary-0"  # node-2

# Addresses.
NODE1 = "192.168.56.11"
NODE2 = "192.168.56.12"
WEB1_V6 = "fd00:10:244:1::10"
WEB2_V6 = "fd00:10:244:2::10"
API1_V6 = "fd00:10:244:1::20"
API2_V6 = "fd00:10:244:2::20"
TRANSCODER_V6 = "fd00:10:244:2::21"
PG_V6 = "fd00:10:244:1::30"
PROM_V6 = "fd00:10:244:1::40"
DNS_B_V6 = "fd00:10:244:2::2"
INTERNET = "203.0.113.10"


def flow(src: str, dst: str, port: str, allowed: bool, behaviour: str):
    """One row: ``src``/``dst`` are ``ns/pod`` or an IP; ``port`` is ``N/proto``."""
    return pytest.param(src, dst, port, allowed, id=behaviour)


FLOWS: dict[str, list] = {
    # backend: every pod isolated for ingress, no rules. Egress untouched.
    "default-deny-ingress.yaml": [
        flow(WEB1, API1, "8080/tcp", False, "cross-namespace-ingress-to-backend-is-denied"),
        flow(TRANSCODER, API2, "9090/tcp", False, "same-namespace-ingress-is-denied-too"),
        flow(PROM, TRANSCODER, "8081/tcp", False, "scrapes-are-denied-until-a-policy-allows-them"),
        flow(INTERNET, API2, "9090/tcp", False, "external-clients-are-denied"),
        flow(WEB2_V6, API2_V6, "9090/tcp", False, "ipv6-ingress-is-denied-like-ipv4"),
        flow(API1, PG, "5432/tcp", True, "backend-egress-to-other-namespaces-is-untouched"),
        flow(API1, INTERNET, "443/tcp", True, "backend-egress-to-the-internet-is-untouched"),
        flow(WEB1, WEB2, "8080/tcp", True, "pods-of-other-namespaces-are-not-isolated"),
        flow(NODE1, API1, "8080/tcp", True, "own-node-reaches-its-pod-for-kubelet-probes"),
        flow(NODE2, API1, "8080/tcp", False, "another-nodes-address-is-just-a-denied-peer"),
        flow(EXPORTER, RELAY, "9300/tcp", True, "hostnetwork-pod-on-the-same-node-is-node-traffic"),
        flow(EXPORTER, TRANSCODER, "8081/tcp", False, "hostnetwork-pod-on-another-node-is-denied"),
    ],
    # db: every pod isolated for ingress and egress, no rules.
    "default-deny-all.yaml": [
        flow(API1, PG, "5432/tcp", False, "ingress-from-backend-is-denied"),
        flow(TRANSCODER, PG, "5432/tcp", False, "ingress-across-nodes-is-denied"),
        flow(API2_V6, PG_V6, "5432/tcp", False, "ipv6-ingress-is-denied"),
        flow(PROM, PG, "9187/tcp", False, "scrape-from-pod-network-is-denied"),
        flow("203.0.113.7", PG, "5432/tcp", False, "external-ingress-is-denied"),
        flow(PG, DNS_A, "53/udp", False, "egress-denies-dns-too"),
        flow(PG, DNS_B, "53/tcp", False, "egress-denies-dns-over-tcp-too"),
        flow(PG, INTERNET, "443/tcp", False, "egress-to-the-internet-is-denied"),
        flow(PG, NODE2, "10250/tcp", False, "egress-to-another-node-is-denied"),
        flow(NODE1, PG, "5432/tcp", True, "own-node-still-reaches-the-db-pod"),
        flow(NODE2, PG, "5432/tcp", False, "another-node-does-not"),
        flow(EXPORTER, PG, "9187/tcp", True, "hostnetwork-scraper-on-the-same-node-is-node-traffic"),
        flow(WEB1, API1, "8080/tcp", True, "other-namespaces-are-unaffected"),
    ],
    # backend app=api accept TCP "http" from (namespace team=web AND pod app=web).
    "allow-from-frontend.yaml": [
        flow(WEB1, API1, "8080/tcp", True, "web-reaches-api-v1-on-http-8080"),
        flow(WEB2, API2, "9090/tcp", True, "web-reaches-api-v2-on-http-9090"),
        flow(WEB1, API2, "9090/tcp", True, "web-reaches-api-across-nodes"),
        flow(WEB1, API2, "8080/tcp", False, "named-port-resolves-on-destination-not-source"),
        flow(WEB2, API1, "9090/tcp", False, "9090-is-not-http-on-api-v1"),
        flow(WEB1, API1, "9100/tcp", False, "ports-other-than-http-stay-closed"),
        flow(WEB1, API1, "8080/udp", False, "named-port-matches-its-protocol-only"),
        flow(ADMIN, API1, "8080/tcp", False, "other-pods-of-the-team-web-namespace-are-refused"),
        flow(CANARY, API1, "8080/tcp", False, "app-web-pods-of-other-namespaces-are-refused"),
        flow(TRANSCODER, API2, "9090/tcp", False, "same-namespace-pods-are-refused"),
        flow(WEB2_V6, API2_V6, "9090/tcp", True, "ipv6-flow-allowed-like-ipv4"),
        flow(WEB1_V6, API2_V6, "8080/tcp", False, "ipv6-named-port-resolves-on-destination"),
        flow(INTERNET, API1, "8080/tcp", False, "external-clients-are-refused"),
        flow(NODE1, API1, "8080/tcp", True, "own-node-reaches-selected-pod"),
        flow(EXPORTER, API2, "9090/tcp", False, "hostnetwork-pod-on-another-node-is-refused"),
        flow(WEB1, RELAY, "7000/tcp", True, "unselected-backend-pods-are-not-isolated"),
        flow(API1, WEB1, "8080/tcp", True, "reverse-direction-is-not-isolated"),
    ],
    # db: all pods isolated for egress; allowed to kube-system k8s-app=kube-dns on UDP/TCP 53.
    "allow-dns-egress.yaml": [
        flow(PG, DNS_A, "53/udp", True, "dns-over-udp-to-kube-dns-is-allowed"),
        flow(PG, DNS_B, "53/tcp", True, "dns-over-tcp-across-nodes-is-allowed"),
        flow(PG_V6, DNS_B_V6, "53/udp", True, "dns-over-ipv6-is-allowed"),
        flow(PG, DNS_B, "53/sctp", False, "other-protocols-on-53-are-denied"),
        flow(PG, DNS_A, "9153/tcp", False, "other-ports-of-kube-dns-are-denied"),
        flow(PG, METRICS_SERVER, "53/udp", False, "other-kube-system-pods-are-denied"),
        flow(PG, "203.0.113.53", "53/udp", False, "outside-resolvers-are-denied"),
        flow(PG, API2, "9090/tcp", False, "everything-else-is-denied-once-egress-is-isolated"),
        flow(WEB1, PG, "5432/tcp", True, "egress-only-policy-leaves-ingress-open"),
        flow(WEB1, "203.0.113.53", "53/udp", True, "other-namespaces-are-unaffected"),
    ],
    # backend app=api egress only to 203.0.113.0/24 except 203.0.113.128/25, TCP 443.
    "egress-ipblock-except.yaml": [
        flow(API1, INTERNET, "443/tcp", True, "https-to-the-allowed-range-is-allowed"),
        flow(API2, "203.0.113.127", "443/tcp", True, "last-address-below-the-except-is-allowed"),
        flow(API1, "203.0.113.128", "443/tcp", False, "first-excepted-address-is-denied"),
        flow(API1, "203.0.113.200", "443/tcp", False, "excepted-range-is-denied"),
        flow(API1, INTERNET, "80/tcp", False, "other-ports-are-denied"),
        flow(API1, INTERNET, "443/udp", False, "quic-is-denied"),
        flow(API1, "10.0.0.50", "443/tcp", False, "addresses-outside-the-cidr-are-denied"),
        flow(API2, "fd00:203::10", "443/tcp", False, "ipv4-ipblock-does-not-cover-ipv6"),
        flow(API1, PG, "5432/tcp", False, "pods-are-denied-once-egress-is-isolated"),
        flow(API1, DNS_A, "53/udp", False, "dns-is-denied-until-a-policy-allows-it"),
        flow(TRANSCODER, "203.0.113.200", "443/tcp", True, "unselected-pods-are-unaffected"),
        flow(WEB1, API1, "8080/tcp", True, "ingress-of-api-pods-is-untouched"),
    ],
    # backend all pods accept TCP "metrics" from any pod of namespaces purpose=monitoring.
    "allow-metrics-scrape.yaml": [
        flow(PROM, API1, "9100/tcp", True, "prometheus-scrapes-api-metrics"),
        flow(PROM, API2, "9100/tcp", True, "prometheus-scrapes-across-nodes"),
        flow(PROM, TRANSCODER, "8081/tcp", True, "metrics-is-8081-on-transcoder"),
        flow(PROM, TRANSCODER, "9100/tcp", False, "9100-is-not-metrics-on-transcoder"),
        flow(PROM, RELAY, "9300/tcp", True, "metrics-is-9300-on-the-ipv4-only-relay"),
        flow(PROM, RELAY, "9100/tcp", False, "9100-is-not-metrics-on-the-relay"),
        flow(PROM, API1, "8080/tcp", False, "http-stays-closed-to-monitoring"),
        flow(PROM, API1, "9100/udp", False, "default-protocol-is-tcp"),
        flow(PROM_V6, TRANSCODER_V6, "8081/tcp", True, "ipv6-scrape-is-allowed"),
        flow(WEB1, API1, "9100/tcp", False, "non-monitoring-namespaces-are-refused"),
        flow(EXPORTER, API2, "9100/tcp", False, "hostnetwork-pod-in-monitoring-is-not-matched-by-selectors"),
        flow(EXPORTER, API1, "9100/tcp", True, "hostnetwork-pod-reaches-pods-on-its-own-node"),
        flow(NODE2, API1, "9100/tcp", False, "another-nodes-address-is-refused"),
        flow(PROM, PG, "9187/tcp", True, "namespaces-without-policies-are-unaffected"),
    ],
    # backend app=media-relay accept TCP 30000-30100 from backend pods role in (transcoder, uploader).
    "port-range.yaml": [
        flow(TRANSCODER, RELAY, "30000/tcp", True, "range-start-is-included"),
        flow(TRANSCODER, RELAY, "30100/tcp", True, "range-end-is-included"),
        flow(API2, RELAY, "30050/tcp", True, "every-value-of-in-matches"),
        flow(TRANSCODER, RELAY, "29999/tcp", False, "port-below-the-range-is-denied"),
        flow(TRANSCODER, RELAY, "30101/tcp", False, "port-above-the-range-is-denied"),
        flow(TRANSCODER, RELAY, "30050/udp", False, "range-is-tcp-only"),
        flow(TRANSCODER, RELAY, "7000/tcp", False, "ports-outside-the-range-stay-closed"),
        flow(API1, RELAY, "30050/tcp", False, "pods-without-the-label-are-refused"),
        flow(ADMIN, RELAY, "30050/tcp", False, "pod-selector-alone-means-the-policys-namespace"),
        flow(PROM, RELAY, "9300/tcp", False, "unlisted-peers-are-refused"),
        flow(INTERNET, RELAY, "30050/tcp", False, "external-clients-are-refused"),
        flow(NODE1, RELAY, "7000/tcp", True, "own-node-reaches-the-relay"),
        flow(TRANSCODER, API2, "30050/tcp", True, "unselected-pods-are-not-isolated"),
    ],
    # db app=postgres accept TCP 5432 from (namespace team=api AND pod app in (api, worker)).
    "allow-db-from-backend.yaml": [
        flow(API1, PG, "5432/tcp", True, "api-v1-reaches-postgres"),
        flow(API2, PG, "5432/tcp", True, "api-v2-reaches-postgres-across-nodes"),
        flow(TRANSCODER, PG, "5432/tcp", True, "worker-matches-the-second-in-value"),
        flow(API2_V6, PG_V6, "5432/tcp", True, "ipv6-is-allowed-like-ipv4"),
        flow(RELAY, PG, "5432/tcp", False, "backend-pods-outside-the-expression-are-refused"),
        flow(WEB1, PG, "5432/tcp", False, "other-namespaces-are-refused"),
        flow(CANARY, PG, "5432/tcp", False, "other-namespaces-are-refused-whatever-the-pod"),
        flow(API1, PG, "5433/tcp", False, "other-ports-are-refused"),
        flow(API1, PG, "5432/udp", False, "other-protocols-are-refused"),
        flow(API1, PG, "9187/tcp", False, "exporter-port-stays-closed"),
        flow(NODE1, PG, "5432/tcp", True, "own-node-reaches-postgres"),
        flow(NODE2, PG, "5432/tcp", False, "another-node-is-refused"),
        flow(PG, INTERNET, "443/tcp", True, "egress-of-postgres-is-untouched"),
    ],
}

# Every example together: policies add up per direction, and a flow needs both
# the source's egress and the destination's ingress to allow it.
ALL_FLOWS = [
    flow(WEB1, API1, "8080/tcp", True, "frontend-allowance-survives-default-deny"),
    flow(WEB1, API2, "8080/tcp", False, "no-policy-adds-8080-on-api-v2"),
    flow(PROM, API2, "9100/tcp", True, "metrics-allowance-survives-default-deny"),
    flow(PROM, API1, "8080/tcp", False, "allowances-do-not-mix-peers-and-ports-across-rules"),
    flow(PROM, RELAY, "9300/tcp", True, "relay-isolated-by-three-policies-allows-their-union"),
    flow(TRANSCODER, RELAY, "30050/tcp", True, "worker-egress-is-not-isolated"),
    flow(API2, RELAY, "30050/tcp", False, "api-egress-isolation-blocks-what-relay-ingress-allows"),
    flow(API1, PG, "5432/tcp", False, "api-egress-isolation-blocks-what-db-ingress-allows"),
    flow(TRANSCODER, PG, "5432/tcp", True, "worker-reaches-postgres"),
    flow(RELAY, PG, "5432/tcp", False, "relay-is-refused-by-postgres"),
    flow(WEB1, PG, "5432/tcp", False, "frontend-is-refused-by-postgres"),
    flow(TRANSCODER, API1, "9100/tcp", False, "backend-pods-do-not-scrape-each-other"),
    flow(PG, DNS_B, "53/udp", True, "dns-allowance-adds-to-default-deny-all"),
    flow(PG, INTERNET, "443/tcp", False, "db-egress-stays-denied-beyond-dns"),
    flow(API1, INTERNET, "443/tcp", True, "api-reaches-the-payment-range"),
    flow(API1, DNS_A, "53/udp", False, "api-has-no-dns-allowance"),
    flow(NODE1, PG, "5432/tcp", True, "own-node-reaches-isolated-pod"),
]

POLICY_KEYS = {
    "default-deny-ingress.yaml": "backend/default-deny-ingress",
    "default-deny-all.yaml": "db/default-deny-all",
    "allow-from-frontend.yaml": "backend/allow-from-frontend",
    "allow-dns-egress.yaml": "db/allow-dns-egress",
    "egress-ipblock-except.yaml": "backend/egress-ipblock-except",
    "allow-metrics-scrape.yaml": "backend/allow-metrics-scrape",
    "port-range.yaml": "backend/port-range",
    "allow-db-from-backend.yaml": "db/allow-db-from-backend",
}

# Policies whose selected pods run on node-2 (the others select node-1 pods only).
NODE2_POLICIES = {
    "backend/default-deny-ingress",
    "backend/allow-from-frontend",
    "backend/egress-ipblock-except",
    "backend/allow-metrics-scrape",
}


def _cases(flows_by_file: dict[str, list]):
    return [
        pytest.param(file, *p.values, id=f"{file.removesuffix('.yaml')}:{p.id}")
        for file, flows in flows_by_file.items()
        for p in flows
    ]


def _endpoint(state, text: str):
    if "/" in text:
        pod = state.pod(text)
        assert pod is not None, f"{text} is not in cluster.yaml"
        return pod
    return text


def _check_verdict(paths: list[str], src: str, dst: str, port: str, allowed: bool) -> None:
    """The evaluator, and the rulesets rendered for the nodes on the path, decide as the spec says."""
    state = load_state(paths)
    number, _, protocol = port.partition("/")
    a, b = _endpoint(state, src), _endpoint(state, dst)
    v = verdict(state, a, b, int(number), protocol.upper())
    assert v.allowed is allowed, f"{src} -> {dst} {port}: {v.reason}"
    assert Dataplane(state).allows(a, b, int(number), L4Protocol(protocol.upper())) is allowed, (
        f"rendered rules: {src} -> {dst} {port}"
    )


def _check_explain(paths: list[str], src: str, dst: str, port: str, allowed: bool) -> None:
    args = ["explain"]
    for p in paths:
        args += ["-f", p]
    args += ["--from", src, "--to", dst, "--port", port, "--format", "json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == (0 if allowed else 1), result.output
    assert json.loads(result.output)["allowed"] is allowed


def test_every_policy_file_has_a_flow_table():
    files = {p.name for p in EXAMPLES.glob("*.yaml")} - {"cluster.yaml"}
    assert files == set(FLOWS) == set(POLICY_KEYS)


@pytest.mark.parametrize("file, src, dst, port, allowed", _cases(FLOWS))
def test_evaluator_decides_flow_as_spec_says(file, src, dst, port, allowed):
    _check_verdict([str(CLUSTER), str(EXAMPLES / file)], src, dst, port, allowed)


@pytest.mark.parametrize("file, src, dst, port, allowed", _cases(FLOWS))
def test_explain_reports_flow_as_spec_says(file, src, dst, port, allowed):
    _check_explain([str(CLUSTER), str(EXAMPLES / file)], src, dst, port, allowed)


@pytest.mark.parametrize("file", sorted(POLICY_KEYS))
def test_render_for_node_1_includes_the_policy(file):
    result = CliRunner().invoke(main, ["render", "-f", str(CLUSTER), "-f", str(EXAMPLES / file), "--node", "node-1"])
    assert result.exit_code == 0, result.output
    assert POLICY_KEYS[file] in result.output


@pytest.mark.parametrize("file, src, dst, port, allowed", _cases({"all examples": ALL_FLOWS}))
def test_all_examples_together_add_up_per_direction(file, src, dst, port, allowed):
    _check_verdict([str(EXAMPLES)], src, dst, port, allowed)
    _check_explain([str(EXAMPLES)], src, dst, port, allowed)


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_all_examples_render_for_each_node_with_only_the_policies_of_its_pods(node):
    result = CliRunner().invoke(main, ["render", "-f", str(EXAMPLES), "--node", node])
    assert result.exit_code == 0, result.output
    expected = set(POLICY_KEYS.values()) if node == "node-1" else NODE2_POLICIES
    for key in POLICY_KEYS.values():
        assert (key in result.output) is (key in expected), key
