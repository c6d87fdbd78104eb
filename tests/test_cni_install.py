"""The conflist installer on real conflists: what it writes, what it refuses,
and that what it writes wires real pods."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.cli import main

BRIDGE = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
          "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}
BANDWIDTH = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
FIREWALL = {"type": "firewall"}


def conflist(*plugins: dict, version: str = "1.0.0") -> dict:
    return {"cniVersion": version, "name": "podnet", "plugins": list(plugins)}


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "net.d").mkdir()
    (tmp_path / "bin").mkdir()
    return tmp_path / "net.d", tmp_path / "bin"


def install(conf: Path, bin_: Path, *extra: str):
    return run("cni", "install", "--conf-dir", str(conf), "--bin-dir", str(bin_), *extra)


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
@pytest.mark.parametrize("plugins,expected", [
    ([BRIDGE], ["bridge", "nftpolicy"]),
    ([BRIDGE, PORTMAP, BANDWIDTH, FIREWALL], ["bridge", "nftpolicy", "portmap", "bandwidth", "firewall"]),
], ids=["bridge alone", "bridge, portmap, bandwidth, firewall"])
def test_install_chains_right_after_bridge_and_keeps_the_rest(dirs, version, plugins, expected) -> None:
    conf, bin_ = dirs
    original = conflist(*plugins, version=version)
    (conf / "10-podnet.conflist").write_text(json.dumps(original))
    result = install(conf, bin_, "--fail-open")
    assert result.exit_code == 0, result.output
    written = json.loads((conf / "10-podnet.conflist").read_text())
    assert [p["type"] for p in written["plugins"]] == expected
    assert written["plugins"][1] == {"type": "nftpolicy", "failOpen": True}
    assert [p for p in written["plugins"] if p["type"] != "nftpolicy"] == original["plugins"]
    assert {k: v for k, v in written.items() if k != "plugins"} == {"cniVersion": version, "name": "podnet"}
    assert json.loads((conf / "10-podnet.conflist.nftpolicy-backup").read_text()) == original
    assert (bin_ / "nftpolicy").stat().st_mode & 0o111 and (bin_ / "nftpolicy.d" / "cni" / "plugin.py").exists()
    assert sorted(p.name for p in conf.iterdir()) == ["10-podnet.conflist", "10-podnet.conflist.nftpolicy-backup"]


def test_the_plugin_runs_from_wherever_the_node_mounts_its_bin_dir(dirs, tmp_path) -> None:
    """The DaemonSet installs through /host/opt/cni/bin; the node runs /opt/cni/bin/nftpolicy."""
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE)))
    assert install(conf, bin_).exit_code == 0
    node_view = tmp_path / "node-opt-cni-bin"
    bin_.rename(node_view)
    result = subprocess.run([str(node_view / "nftpolicy")], input=b"{}", capture_output=True,
                            env={"CNI_COMMAND": "VERSION"})
    assert result.returncode == 0, result.stderr
    assert "1.0.0" in json.loads(result.stdout)["supportedVersions"]


def test_install_twice_changes_nothing(dirs) -> None:
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE, PORTMAP)))
    assert install(conf, bin_).exit_code == 0
    first = (conf / "10-podnet.conflist").read_text()
    assert install(conf, bin_).exit_code == 0
    assert (conf / "10-podnet.conflist").read_text() == first


def test_uninstall_restores_the_conflist_and_removes_the_plugin(dirs) -> None:
    conf, bin_ = dirs
    original = conflist(BRIDGE, PORTMAP, FIREWALL)
    (conf / "10-podnet.conflist").write_text(json.dumps(original))
    assert install(conf, bin_).exit_code == 0
    result = run("cni", "uninstall", "--conf-dir", str(conf), "--bin-dir", str(bin_))
    assert result.exit_code == 0, result.output
    assert json.loads((conf / "10-podnet.conflist").read_text()) == original
    assert list(bin_.iterdir()) == [] and [p.name for p in conf.iterdir()] == ["10-podnet.conflist"]


@pytest.mark.parametrize("name,text,message", [
    ("10-podnet.conflist", "{not json", "not valid JSON"),
    ("10-podnet.conflist", json.dumps(conflist(PORTMAP)), "no bridge plugin"),
    ("10-podnet.conflist", json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": {"type": "bridge"}}), "plugins: must be a list"),
    ("10-bridge.conf", json.dumps({"cniVersion": "1.0.0", "name": "podnet", **BRIDGE}), "single-plugin configuration"),
], ids=["malformed", "no bridge", "plugins not a list", "single-plugin .conf"])
def test_install_refuses_what_it_cannot_change_safely(dirs, name, text, message) -> None:
    conf, bin_ = dirs
    (conf / name).write_text(text)
    result = install(conf, bin_)
    assert result.exit_code == 2 and message in result.output and name in result.output
    assert (conf / name).read_text() == text and list(bin_.iterdir()) == [], "nothing changed"


def test_install_without_any_configuration_is_refused(dirs) -> None:
    conf, bin_ = dirs
    result = install(conf, bin_)
    assert result.exit_code == 2 and "no CNI configuration" in result.output


def test_the_first_file_in_lexical_order_is_the_one_changed(dirs) -> None:
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE)))
    (conf / "99-other.conflist").write_text(json.dumps(conflist(BRIDGE)))
    assert install(conf, bin_).exit_code == 0
    assert "nftpolicy" in (conf / "10-podnet.conflist").read_text()
    assert "nftpolicy" not in (conf / "99-other.conflist").read_text()
