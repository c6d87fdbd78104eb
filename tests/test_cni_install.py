"""The conflist installer on real conflists: what it writes, what it refuses,
and that what it writes wires real pods."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from enforcer.cli import main

BRIDGE = {
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": True,
    "ipMasq": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]},
}
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
@pytest.mark.parametrize(
    "plugins,expected",
    [
        ([BRIDGE], ["bridge", "nftpolicy"]),
        ([BRIDGE, PORTMAP, BANDWIDTH, FIREWALL], ["bridge", "nftpolicy", "portmap", "bandwidth", "firewall"]),
    ],
    ids=["bridge alone", "bridge, portmap, bandwidth, firewall"],
)
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
    result = subprocess.run([str(node_view / "nftpolicy")], input=b"{}", capture_output=True, env={"CNI_COMMAND": "VERSION"})
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


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("10-podnet.conflist", "{not json", "not valid JSON"),
        ("10-podnet.conflist", json.dumps(conflist(PORTMAP)), "no bridge plugin"),
        (
            "10-podnet.conflist",
            json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": {"type": "bridge"}}),
            "plugins: must be a list",
        ),
        ("10-bridge.conf", json.dumps({"cniVersion": "1.0.0", "name": "podnet", **BRIDGE}), "single-plugin configuration"),
    ],
    ids=["malformed", "no bridge", "plugins not a list", "single-plugin .conf"],
)
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


# --- the two forms of the plugin ---------------------------------------------


def _form_of(bin_: Path) -> str:
    return "shim" if (bin_ / "nftpolicy").read_bytes()[:4] == b"\x7fELF" else "python"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--form", "shim"], "shim"),
        (["--form", "python"], "python"),
        ([], "shim"),  # the default where there is a shim
        (["--shim", "/nonexistent/nftpolicy"], "python"),  # ...and where there is none
    ],
    ids=["shim", "python", "default with a shim", "default without a shim"],
)
def test_install_puts_the_plugin_in_the_form_asked_or_the_shim_where_there_is_one(dirs, shim, args, expected) -> None:
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE)))
    if "--shim" not in args:
        args = [*args, "--shim", str(shim)]
    result = install(conf, bin_, *args)
    assert result.exit_code == 0, result.output
    assert f"({expected} form)" in result.output
    assert _form_of(bin_) == expected and (bin_ / "nftpolicy").stat().st_mode & 0o111
    assert sorted(p.name for p in bin_.iterdir()) == (["nftpolicy"] if expected == "shim" else ["nftpolicy", "nftpolicy.d"])
    if expected == "shim":
        assert (bin_ / "nftpolicy").read_bytes() == shim.read_bytes()
    assert [p["type"] for p in json.loads((conf / "10-podnet.conflist").read_text())["plugins"]] == ["bridge", "nftpolicy"]


def test_switching_forms_leaves_nothing_of_the_other(dirs, shim) -> None:
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE)))
    for form in ("python", "shim", "python", "shim"):
        assert install(conf, bin_, "--form", form, "--shim", str(shim)).exit_code == 0
        assert _form_of(bin_) == form
        assert (bin_ / "nftpolicy.d").exists() == (form == "python")
    assert run("cni", "uninstall", "--conf-dir", str(conf), "--bin-dir", str(bin_)).exit_code == 0
    assert list(bin_.iterdir()) == []


def test_the_shim_form_without_a_shim_is_refused_and_nothing_changes(dirs) -> None:
    conf, bin_ = dirs
    text = json.dumps(conflist(BRIDGE))
    (conf / "10-podnet.conflist").write_text(text)
    result = install(conf, bin_, "--form", "shim", "--shim", "/nonexistent/nftpolicy")
    assert result.exit_code == 2 and "no shim executable at /nonexistent/nftpolicy" in result.output
    assert (conf / "10-podnet.conflist").read_text() == text and list(bin_.iterdir()) == []


def test_the_shim_runs_from_wherever_the_node_mounts_its_bin_dir_without_python(dirs, tmp_path, shim) -> None:
    """A static executable: an empty environment, and nothing beside it."""
    conf, bin_ = dirs
    (conf / "10-podnet.conflist").write_text(json.dumps(conflist(BRIDGE)))
    assert install(conf, bin_, "--form", "shim", "--shim", str(shim)).exit_code == 0
    node_view = tmp_path / "node-opt-cni-bin"
    bin_.rename(node_view)
    result = subprocess.run(
        [str(node_view / "nftpolicy")], input=b'{"cniVersion": "1.0.0"}', capture_output=True, env={"CNI_COMMAND": "VERSION"}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    assert _static(node_view / "nftpolicy"), "no interpreter, no dynamic section: it needs no libc of the node's"


def _static(path: Path) -> bool:
    """An x86-64/arm64 ELF executable without PT_INTERP (3) and PT_DYNAMIC (2) program headers."""
    import struct

    data = path.read_bytes()
    assert data[:5] == b"\x7fELF\x02", "a 64-bit ELF"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = {struct.unpack_from("<I", data, phoff + n * phentsize)[0] for n in range(phnum)}
    return not types & {2, 3}
