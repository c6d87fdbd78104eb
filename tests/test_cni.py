"""The chained CNI plugin, run as a container runtime runs it, on a real node,
in both forms the installer puts on a node: the static shim that forwards each
call to the enforcer, and the Python plugin run by the node's Python."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from enforcer.node.cni_install import install_plugin
from cni.records import read_record
from enforcer.testbed.simulation import PYTHON, in_ns

pytestmark = pytest.mark.kernel


@pytest.fixture(params=["python", "shim"])
def form(request, bed) -> str:
    """The bed's plugin in this form for the test; the python form again after it."""
    if request.param == "shim":
        install_plugin(bed.cni_bin, form="shim", shim=request.getfixturevalue("shim"))
    yield request.param
    install_plugin(bed.cni_bin, PYTHON, form="python")


def run_plugin(node, command: str, conf: dict, **env: str) -> tuple[int, dict | None]:
    """The nftpolicy plugin alone, with exactly the environment given."""
    base = {"CNI_COMMAND": command, "CNI_PATH": str(node.bed.cni_bin), "PATH": os.environ["PATH"]}
    result = subprocess.run(
        ["ip", "netns", "exec", node.netns, str(node.bed.cni_bin / "nftpolicy")],
        input=json.dumps(conf),
        env={**base, **env},
        capture_output=True,
        text=True,
    )
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None)


def plugin_conf(node, version: str = "1.0.0", **extra) -> dict:
    return {"cniVersion": version, "name": "podnet", **node.conflist(version)["plugins"][1], **extra}


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_version_lists_the_supported_versions(bed, form, version: str) -> None:
    code, out = run_plugin(bed.nodes[0], "VERSION", {"cniVersion": version})
    assert code == 0 and out == {"cniVersion": version, "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_stdin_that_is_not_json_is_a_decode_error(bed, form) -> None:
    node = bed.nodes[0]
    result = subprocess.run(
        ["ip", "netns", "exec", node.netns, str(node.bed.cni_bin / "nftpolicy")],
        input="{not json",
        env={"CNI_COMMAND": "ADD", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and json.loads(result.stdout)["code"] == 6


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del_through_the_conflist(bed, form, version: str) -> None:
    node = bed.nodes[0]
    pod = node.add_pod(f"x/cni-{version.replace('.', '-')}", {"app": "cni"}, publish=False, version=version)
    bridge_result, own_result = pod.plugin_results
    assert own_result == bridge_result, "prevResult must come back unchanged"
    record = read_record(node.state_dir, pod.container_id)
    assert record.key == pod.key and record.host_ifname == pod.host_ifname and list(record.ips) == pod.ips
    assert f"alias nftpolicy {pod.key}" in in_ns(node.netns, "ip", "link", "show", pod.host_ifname).stdout
    assert node.run_conflist("CHECK", pod, version) is None
    node.delete_pod(pod.key, version, publish=False)
    assert read_record(node.state_dir, pod.container_id) is None
    for _ in range(2):  # again, with neither record nor netns: still success
        code, out = node.run_plugin(node.conflist(version)["plugins"][1], "DEL", pod, pod.result, version)
        assert code == 0, out


def test_check_fails_when_the_pod_is_not_programmed(bed, form) -> None:
    node = bed.nodes[0]
    pod = node.pods["x/a"]
    code, out = node.run_plugin(
        node.conflist()["plugins"][1],
        "CHECK",
        pod,
        {
            **pod.result,
            "interfaces": [{"name": "cni0"}, {"name": "vethmissing"}, *[i for i in pod.result["interfaces"] if i.get("sandbox")]],
        },
        "1.0.0",
    )
    assert code != 0 and "record for x/a says" in out["msg"]


def test_gc_removes_records_of_attachments_that_are_gone(bed, form) -> None:
    node = bed.nodes[0]
    pod = node.add_pod("x/gc", publish=False)
    live = [{"containerID": p.container_id, "ifname": "eth0"} for key, p in node.pods.items() if key != "x/gc"]
    code, out = run_plugin(node, "GC", {**plugin_conf(node, "1.1.0"), "cni.dev/valid-attachments": live})
    assert code == 0, out
    assert read_record(node.state_dir, pod.container_id) is None
    assert all(read_record(node.state_dir, p["containerID"]) for p in live)
    node.delete_pod("x/gc", publish=False)


def test_status_reports_an_unreachable_enforcer(bed, form) -> None:
    node = bed.nodes[0]
    assert run_plugin(node, "STATUS", plugin_conf(node, "1.1.0"))[0] == 0
    code, out = run_plugin(node, "STATUS", plugin_conf(node, "1.1.0", socket="/nonexistent/cni.sock"))
    assert code != 0 and out["code"] == 50


@pytest.mark.parametrize("form", ["python", "shim"])
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_the_installed_chain_with_portmap_bandwidth_and_firewall_wires_protected_pods(
    tmp_path, request, version: str, form: str
) -> None:
    from builders import policy
    from enforcer.testbed.simulation import Testbed

    extra = (
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "firewall", "backend": "iptables"},
    )
    shim = request.getfixturevalue("shim") if form == "shim" else None
    with Testbed(tmp_path / "bed", nodes=1, extra_plugins=extra, cni_form=form, shim=shim) as bed:
        node = bed.nodes[0]
        assert [p["type"] for p in node.conflist()["plugins"]] == ["bridge", "nftpolicy", "portmap", "bandwidth", "firewall"]
        assert ((bed.cni_bin / "nftpolicy").read_bytes()[:4] == b"\x7fELF") == (form == "shim")
        bed.namespace("x")
        node.start_enforcer()
        a = node.add_pod("x/a", {"app": "a"}, version=version)
        b = node.add_pod("x/b", {"app": "b"}, version=version)
        bed.wait_converged()
        assert b.connects(a.ip(4), 80)
        bed.apply_policies(policy("x/deny", {"podSelector": {"matchLabels": {"app": "a"}}}))
        bed.wait_converged()
        assert b.blocked(a.ip(4), 80)
        node.delete_pod("x/a", version)
