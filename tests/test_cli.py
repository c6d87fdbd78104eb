"""The nftpolicy command line: exit codes, formats, and errors that name the object and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.cli import ExitCode, main

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_invalid_policy_exits_2_naming_object_and_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\n"
        "spec: {podSelector: {}, ingress: [{ports: [{port: 80}, {port: 90, endPort: 80}]}]}\n"
    )
    for args in (
        ["render", "-f", str(bad), "--node", "n1"],
        ["explain", "-f", str(bad), "--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "80"],
    ):
        result = invoke(*args)
        assert result.exit_code == ExitCode.INVALID_INPUT
        assert "x/deny-all: spec.ingress[0].ports[1].endPort: must not be less than port" in result.output


def test_unknown_pod_and_bad_port_exit_2() -> None:
    assert invoke("explain", "-f", str(EXAMPLES), "--from", "nope/pod", "--to", "10.0.0.1", "--port", "80").exit_code == 2
    result = invoke("explain", "-f", str(EXAMPLES), "--from", "frontend/web-1", "--to", "backend/api-v1-0", "--port", "80/icmp")
    assert result.exit_code == 2 and "--port 80/icmp" in result.output
    assert invoke("explain", "-f", str(EXAMPLES), "--from", "10.0.0.1", "--to", "fd00::1", "--port", "80").exit_code == 2


def test_explain_json_names_the_deciding_rule_or_the_isolating_policies() -> None:
    allowed = invoke(
        "explain",
        "-f",
        str(EXAMPLES),
        "--from",
        "frontend/web-1",
        "--to",
        "backend/api-v1-0",
        "--port",
        "8080",
        "--format",
        "json",
    )
    assert allowed.exit_code == ExitCode.OK
    assert json.loads(allowed.output)["deciding_rules"] == ["backend/allow-from-frontend ingress[0]"]
    denied = invoke(
        "explain",
        "-f",
        str(EXAMPLES),
        "--from",
        "staging/web-canary-0",
        "--to",
        "backend/api-v1-0",
        "--port",
        "8080",
        "--format",
        "json",
    )
    assert denied.exit_code == ExitCode.DENIED
    body = json.loads(denied.output)
    assert body["allowed"] is False and "backend/default-deny-ingress" in body["denied_by"]


def test_explain_text_says_the_verdict_first() -> None:
    result = invoke("explain", "-f", str(EXAMPLES), "--from", "frontend/web-1", "--to", "backend/api-v1-0", "--port", "8080/TCP")
    assert result.output.startswith("ALLOWED  frontend/web-1 ")
    assert "allowed by backend/allow-from-frontend ingress[0]" in result.output


def test_render_json_is_a_libnftables_batch() -> None:
    result = invoke("render", "-f", str(EXAMPLES), "--node", "node-1", "--format", "json")
    batch = json.loads(result.output)["nftables"]
    assert batch[0] == {
        "add": {"table": {"family": "inet", "name": "nftpolicy", "comment": "nftpolicy: NetworkPolicy for pods on node node-1"}}
    }
    assert any("rule" in op["add"] for op in batch)


@pytest.mark.kernel
def test_demo_enforces_the_examples_on_simulated_nodes() -> None:
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    before, after = result.output.split("Applied ")
    assert "  X" not in before and "  X" in after
    assert "The packets agree with the reference evaluator." in after


ADMIN_DENY = """
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: backend-lockdown}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: backend}}}
  ingress:
    - {name: no-frontend, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: frontend}}}]}
"""


def test_explain_names_the_cluster_policy_rule_that_overrides_a_network_policy(tmp_path) -> None:
    (tmp_path / "cnp.yaml").write_text(ADMIN_DENY)
    args = ["explain", "-f", str(EXAMPLES), "-f", str(tmp_path), "--from", "frontend/web-1", "--to", "backend/api-v1-0"]
    text = invoke(*args, "--port", "8080")
    assert text.exit_code == ExitCode.DENIED
    assert "ingress of backend/api-v1-0: Admin: cnp/backend-lockdown ingress[0] (no-frontend) Deny" in text.output
    body = json.loads(invoke(*args, "--port", "8080", "--format", "json").output)
    assert body["allowed"] is False and body["deciding_rules"][0] == "cnp/backend-lockdown ingress[0] (no-frontend) Deny"
    assert body["tiers"]["egress"]["tier"] == "default" and body["tiers"]["ingress"]["tier"] == "Admin"
