"""The CNI plugin's answers to bad calls, in-process through ``plugin.run``:
no node, no root. (Every call through the installed executables, in both
forms, is in test_cni.py, test_cni_shim.py and test_hostile_input.py.)"""

from __future__ import annotations

import io
import json

import pytest

from cni import plugin


def plugin_conf(tmp_path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "podnet",
        "type": "nftpolicy",
        "stateDir": str(tmp_path / "state"),
        "socket": str(tmp_path / "cni.sock"),
    }


@pytest.mark.parametrize(
    "conf,env,code,message",
    [
        (
            {},
            {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=p"},
            7,
            "must be called as a chained plugin",
        ),
        (
            {"prevResult": {"interfaces": [], "ips": []}},
            {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"},
            4,
            "CNI_ARGS: missing K8S_POD_NAMESPACE, K8S_POD_NAME",
        ),
        (
            {"prevResult": {}},
            {"CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=p"},
            4,
            "missing environment variable CNI_CONTAINERID",
        ),
        (
            {"prevResult": {"interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": [{"address": "10.0.0.2/24"}]}},
            {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=p"},
            7,
            "expected a host-side veth",
        ),
        ({"cniVersion": "0.3.1"}, {}, 1, "cniVersion 0.3.1 is not supported"),
        ({"timeoutSeconds": "soon", "prevResult": {}}, {}, 7, "timeoutSeconds: must be a number"),
    ],
)
def test_bad_calls_get_cni_errors(tmp_path, conf, env, code, message) -> None:
    stdout = io.StringIO()
    exit_code = plugin.run({"CNI_COMMAND": "ADD", **env}, io.StringIO(json.dumps({**plugin_conf(tmp_path), **conf})), stdout)
    out = json.loads(stdout.getvalue())
    assert exit_code != 0 and out["code"] == code and message in out["msg"], out
