"""The CNI shim (cni/shim), the static executable that forwards each CNI call
to the enforcer. What it answers itself (VERSION, and calls it cannot
forward) it answers as the Python plugin does; the exchange with the enforcer
is one JSON line each way; when the enforcer is unreachable, ADD fails with
"try again later" (or, with failOpen, passes prevResult back and spools the
call), DEL removes the record itself, CHECK, GC and STATUS fail naming the
socket. Then, on a simulated node (root): the same with a real enforcer
stopped and started again, and a veth held down from inside the enforcer.

Wiring pods and enforcing policy through the shim is tested with the Python
form in test_cni.py and test_hostile_input.py, parametrized over both forms.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from cni import plugin
from cni.records import PodRecord, read_record, write_record

PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": "vethshim0", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "sandbox": "/var/run/netns/p", "mac": "02:00:00:00:00:03"},
    ],
    "ips": [{"address": "10.244.1.9/24", "gateway": "10.244.1.1", "interface": 2}],
}
ENV = {
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/p",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=p;K8S_POD_UID=u",
    "CNI_PATH": "/opt/cni/bin",
}


class Answer(NamedTuple):
    code: int
    out: dict | None
    stdout: str
    stderr: str


def call(shim: Path, command: str | None, stdin: str | bytes, env: dict | None = None) -> Answer:
    """The shim as a runtime runs it: only the CNI_* variables given (and one that is not, to be left behind)."""
    full = {**({"CNI_COMMAND": command} if command is not None else {}), **(env or {}), "NOT_CNI": "left behind"}
    result = subprocess.run(
        [str(shim)], input=stdin.encode() if isinstance(stdin, str) else stdin, env=full, capture_output=True, timeout=60
    )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert "panic" not in stderr and "goroutine" not in stderr, stderr
    return Answer(result.returncode, json.loads(stdout) if stdout.strip() else None, stdout, stderr)


def python_plugin(command: str | None, stdin: str, env: dict | None = None) -> Answer:
    """cni/plugin.py on the same call, in this process."""
    out = io.StringIO()
    code = plugin.run({**({"CNI_COMMAND": command} if command is not None else {}), **(env or {})}, io.StringIO(stdin), out)
    return Answer(code, json.loads(out.getvalue()) if out.getvalue().strip() else None, out.getvalue(), "")


# --- 1. what the shim answers itself, as the Python plugin answers it ---------


def _same(command: str | None, stdin: str, exact: bool = True, case_id: str = ""):
    return pytest.param(command, stdin, exact, id=case_id or f"{command} {stdin[:40]}")


ANSWERED_HERE = [
    *[
        _same("VERSION", json.dumps({"cniVersion": v}), case_id=f"VERSION at {v!r}")
        for v in ("0.4.0", "1.0.0", "1.1.0", "", None, 0, "9.9.9", ["1.0.0"], {"a": 1}, 2.5)
    ],
    _same("VERSION", "{}", case_id="VERSION without cniVersion"),
    _same("VERSION", "", case_id="VERSION with nothing on stdin"),
    _same("ADD", '{"cniVersion": "0.3.1"}', case_id="cniVersion unsupported"),
    _same("ADD", '{"cniVersion": 1.0}', case_id="cniVersion a number"),
    _same("ADD", '{"cniVersion": ["1.0.0"]}', exact=False, case_id="cniVersion a list"),
    *[
        _same("ADD", json.dumps({"cniVersion": "1.0.0", "timeoutSeconds": t}), case_id=f"timeoutSeconds {t!r}")
        for t in ("soon", "10", -1, 0, 3601, 1e300, True, None, [5])
    ],
    *[
        _same("ADD", json.dumps({"cniVersion": "1.0.0", **c}), case_id=f"{c}")
        for c in (
            {"stateDir": 5},
            {"stateDir": ""},
            {"stateDir": "a\0b"},
            {"socket": ["/x.sock"]},
            {"socket": None},
            {"stateDir": 5, "socket": 5},
        )
    ],
    _same("GC", '{"cniVersion": "1.0.0"}', case_id="GC before 1.1.0"),
    _same("STATUS", '{"cniVersion": "0.4.0"}', case_id="STATUS before 1.1.0"),
    _same("EXPLODE", '{"cniVersion": "1.0.0"}', case_id="an unknown command"),
    _same("EXPLODE", '{"cniVersion": "1.0.0", "timeoutSeconds": "soon"}', case_id="an unknown command, config checked first"),
    _same("it's", "{}", case_id="a command with a quote"),
    _same("", '{"cniVersion": "1.0.0"}', case_id="CNI_COMMAND empty"),
    _same(None, "", case_id="CNI_COMMAND missing"),
    *[
        _same("ADD", text, exact=False, case_id=f"stdin {name}")
        for name, text in (
            ("not JSON", "{not json"),
            ("a list", "[1]"),
            ("a string", '"conf"'),
            ("a number", "1"),
            ("JSON and more", '{"cniVersion": "1.0.0"} {}'),
            ("100,000 [", "[" * 100_000),
            ("truncated", '{"cniVersion": "1.0'),
        )
    ],
]


@pytest.mark.parametrize("command,stdin,exact", ANSWERED_HERE)
def test_version_and_calls_that_cannot_be_forwarded_are_answered_as_the_python_plugin_answers(
    shim, command, stdin, exact
) -> None:
    env = {**ENV, "CNI_PATH": "/nonexistent"}
    ours, python = call(shim, command, stdin, env), python_plugin(command, stdin, env)
    assert ours.code == python.code, (ours, python)
    if exact:
        assert ours.out == python.out
    else:  # the same code and message, but for how Go and Python word a parse error or print a value

        def gist(msg: str) -> tuple[str, str]:
            words = msg.split(":")[0].split()
            return words[0], words[-1]

        assert ours.out["code"] == python.out["code"] and ours.out["cniVersion"] == python.out["cniVersion"]
        assert gist(ours.out["msg"]) == gist(python.out["msg"]), (ours.out, python.out)


@pytest.mark.parametrize("stdin", [b"\xff\xfe{\x80\x81}", b"x" * 10_000_000, b"\0"], ids=["not UTF-8", "10 MB of text", "a NUL"])
def test_malformed_stdin_is_a_decode_error(shim, stdin) -> None:
    answer = call(shim, "ADD", stdin, ENV)
    assert answer.code == 1 and answer.out["code"] == plugin.DECODE_FAILURE and "not JSON" in answer.out["msg"], answer


# --- 2. the exchange with the enforcer ---------------------------------------


class FakeEnforcer:
    """A unix socket that records each request line and answers with ``reply(request_line)`` (bytes)."""

    def __init__(self, path: Path, reply: Callable[[bytes], bytes]) -> None:
        self.path, self.reply, self.requests = path, reply, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                line = conn.makefile("rb").readline()
                self.requests.append(line)
                conn.sendall(self.reply(line))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def fake_enforcer(tmp_path):
    made = []

    def make(reply: Callable[[bytes], bytes]) -> FakeEnforcer:
        made.append(FakeEnforcer(tmp_path / "cni.sock", reply))
        return made[-1]

    yield make
    for enforcer in made:
        enforcer.close()


def conf(tmp_path: Path, **changes) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "podnet",
        "type": "nftpolicy",
        "stateDir": str(tmp_path / "state"),
        "socket": str(tmp_path / "cni.sock"),
        "timeoutSeconds": 5,
        "prevResult": PREV_RESULT,
        **changes,
    }


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_a_call_goes_to_the_enforcer_as_one_line_with_the_cni_environment_and_stdin_as_given(
    shim, tmp_path, fake_enforcer, command
) -> None:
    enforcer = fake_enforcer(lambda line: b'{"code": 0, "stdout": "", "stderr": ""}\n')
    stdin = json.dumps(conf(tmp_path, cniVersion="1.1.0", note="é <&> \u2603 \\"), indent=1, ensure_ascii=False) + "\n"
    assert call(shim, command, stdin, ENV).code == 0
    (line,) = enforcer.requests
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"command": "CNI", "env": {"CNI_COMMAND": command, **ENV}, "stdin": stdin}


@pytest.mark.parametrize(
    "reply,code,stdout,stderr",
    [
        ({"code": 0, "stdout": json.dumps(PREV_RESULT), "stderr": ""}, 0, json.dumps(PREV_RESULT), ""),
        (
            {"code": 1, "stdout": '{"cniVersion": "1.0.0", "code": 7, "msg": "bad"}', "stderr": "nftpolicy: a warning\n"},
            1,
            '{"cniVersion": "1.0.0", "code": 7, "msg": "bad"}',
            "nftpolicy: a warning\n",
        ),
        ({"code": 0, "stdout": "", "stderr": "nftpolicy: x/p: held down\n"}, 0, "", "nftpolicy: x/p: held down\n"),
        ({"code": 300, "stdout": "{}", "stderr": ""}, 1, "{}", ""),
    ],
    ids=["result", "CNI error and a warning", "nothing on stdout", "exit code out of range"],
)
def test_the_enforcer_s_answer_is_what_the_runtime_gets(shim, tmp_path, fake_enforcer, reply, code, stdout, stderr) -> None:
    fake_enforcer(lambda line: (json.dumps(reply) + "\n").encode())
    answer = call(shim, "ADD", json.dumps(conf(tmp_path)), ENV)
    assert (answer.code, answer.stdout, answer.stderr) == (code, stdout, stderr)


# --- 3. the enforcer unreachable --------------------------------------------


def _no_socket(tmp_path, fake_enforcer) -> str:
    return "no such file or directory"


def _nobody_listening(tmp_path, fake_enforcer) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "cni.sock"))  # a socket file left by an enforcer that is gone
    s.close()
    return "connection refused"


def _closes_without_answering(tmp_path, fake_enforcer) -> str:
    fake_enforcer(lambda line: b"")
    return "closed the connection without answering"


def _answers_something_else(tmp_path, fake_enforcer) -> str:
    fake_enforcer(lambda line: b'{"ok": false, "error": "expected command ADD, DEL or CHECK"}\n')
    return "not a CNI reply"


UNREACHABLE = [
    pytest.param(f, id=f.__name__.strip("_").replace("_", " "))
    for f in (_no_socket, _nobody_listening, _closes_without_answering, _answers_something_else)
]


@pytest.mark.parametrize("how", UNREACHABLE)
@pytest.mark.parametrize(
    "command,version,code", [("ADD", "1.0.0", 11), ("CHECK", "1.0.0", 11), ("GC", "1.1.0", 11), ("STATUS", "1.1.0", 50)]
)
def test_without_the_enforcer_add_check_gc_and_status_fail_naming_the_socket(
    shim, tmp_path, fake_enforcer, how, command, version, code
) -> None:
    why = how(tmp_path, fake_enforcer)
    answer = call(shim, command, json.dumps(conf(tmp_path, cniVersion=version)), ENV)
    assert answer.code == 1 and answer.out["code"] == code, answer
    assert f"enforcer at {tmp_path / 'cni.sock'} unreachable" in answer.out["msg"] and why in answer.out["msg"], answer.out
    assert not (tmp_path / "state").exists(), "nothing written: the runtime tries again later"


@pytest.mark.parametrize("how", UNREACHABLE)
def test_without_the_enforcer_a_fail_open_add_passes_prev_result_back_and_spools_the_call(
    shim, tmp_path, fake_enforcer, how
) -> None:
    how(tmp_path, fake_enforcer)
    stdin = json.dumps(conf(tmp_path, failOpen=True, prevResult={**PREV_RESULT, "dns": {"nameservers": ["10.96.0.10"]}}))
    answer = call(shim, "ADD", stdin, ENV)
    assert answer.code == 0 and answer.out == json.loads(stdin)["prevResult"], answer
    assert "failOpen: the pod runs unprotected until the enforcer programs it" in answer.stderr
    spooled = json.loads((tmp_path / "state" / "pending" / "c0ffee.json").read_text())
    assert spooled == {"command": "CNI", "env": {"CNI_COMMAND": "ADD", **ENV}, "stdin": stdin}
    assert sorted(os.listdir(tmp_path / "state" / "pending")) == ["c0ffee.json"], "no temporary file left"


@pytest.mark.parametrize(
    "changes,env,code,message",
    [
        ({"failOpen": "yes"}, {}, 7, "failOpen: must be true or false"),
        ({"prevResult": None}, {}, 7, "missing prevResult"),
        ({"prevResult": [PREV_RESULT]}, {}, 7, "prevResult: must be an object"),
        ({"failOpen": True}, {"CNI_CONTAINERID": "../../etc/x"}, 5, "invalid container ID '../../etc/x'"),
        ({"failOpen": True}, {"CNI_CONTAINERID": ""}, 4, "missing environment variable CNI_CONTAINERID"),
    ],
    ids=["failOpen a word", "no prevResult", "prevResult a list", "container ID that climbs", "no container ID"],
)
def test_without_the_enforcer_a_bad_add_is_still_refused(shim, tmp_path, changes, env, code, message) -> None:
    answer = call(shim, "ADD", json.dumps(conf(tmp_path, **changes)), {**ENV, **env})
    assert answer.code == 1 and answer.out["code"] == code and message in answer.out["msg"], answer
    assert not (tmp_path / "state").exists()


def test_without_the_enforcer_del_removes_the_record_and_the_spooled_add(shim, tmp_path) -> None:
    state = tmp_path / "state"
    write_record(state, PodRecord("c0ffee", "x", "p", "u", "vethshim0", None, ("10.244.1.9",)))
    write_record(state, PodRecord("other", "x", "q", "u", "vethshim1", None, ("10.244.1.10",)))
    (state / "pending").mkdir()
    (state / "pending" / "c0ffee.json").write_text("{}")
    for _ in range(2):  # again, with nothing left: still success
        answer = call(shim, "DEL", json.dumps(conf(tmp_path)), ENV)
        assert answer.code == 0 and answer.stdout == "", answer
        assert f"enforcer at {tmp_path / 'cni.sock'} unreachable" in answer.stderr
        assert read_record(state, "c0ffee") is None and not (state / "pending" / "c0ffee.json").exists()
        assert read_record(state, "other") is not None, "only this container's record"


@pytest.mark.parametrize(
    "container_id,code,message",
    [
        ("../pods/other", 5, "cannot remove the pod record: invalid container ID '../pods/other'"),
        (".hidden", 5, "invalid container ID '.hidden'"),
        ("c" * 201, 5, "invalid container ID"),
        ("", 4, "missing environment variable CNI_CONTAINERID"),
    ],
    ids=["climbs", "hidden", "too long", "empty"],
)
def test_without_the_enforcer_del_refuses_a_container_id_that_is_not_a_plain_name(
    shim, tmp_path, container_id, code, message
) -> None:
    state = tmp_path / "state"
    write_record(state, PodRecord("other", "x", "q", "u", "vethshim1", None, ("10.244.1.10",)))
    answer = call(shim, "DEL", json.dumps(conf(tmp_path)), {**ENV, "CNI_CONTAINERID": container_id})
    assert answer.code == 1 and answer.out["code"] == code and message in answer.out["msg"], answer
    assert read_record(state, "other") is not None
    python = python_plugin("DEL", json.dumps(conf(tmp_path)), {**ENV, "CNI_CONTAINERID": container_id})
    assert python.out == answer.out, "as the Python plugin answers it"


# --- 4. the enforcer's side: the plugin run in-process (a fake kernel, no root) ---


class InProcess:
    """An in-process enforcer on a fake kernel with its CNI server; the links the
    in-process plugin would change are recorded, not changed (this is the host's namespace)."""

    def __init__(self, root: Path, links: list) -> None:
        from enforcer.node.cni_server import CniServer
        from enforcer.daemon import Enforcer, EnforcerConfig
        from enforcer.kernel.fake import FakeKernel
        from enforcer.sources.directory import DirectorySource

        source = root / "source"
        source.mkdir()
        (source / "cluster.yaml").write_text(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}))
        self.state_dir, self.links, self.stop = root / "state", links, threading.Event()
        config = EnforcerConfig(node="n1", source=str(source), state_dir=self.state_dir, poll_interval=0.01)
        self.enforcer = Enforcer(config, DirectorySource(source), FakeKernel())
        self.server = CniServer(root / "cni.sock", self.enforcer, wait=60)
        self.conf = {
            "cniVersion": "1.0.0",
            "name": "podnet",
            "type": "nftpolicy",
            "stateDir": str(self.state_dir),
            "socket": str(root / "cni.sock"),
            "timeoutSeconds": 60,
        }

    def __enter__(self) -> "InProcess":
        threading.Thread(target=self.enforcer.run, args=(self.stop,), daemon=True).start()
        threading.Thread(target=self.server.serve, args=(self.stop,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def cni(self, command: str, container_id: str, prev: dict | None = None, **env: str) -> dict:
        stdin = json.dumps({**self.conf, **({"prevResult": prev} if prev is not None else {})})
        return self.server.answer(
            {"command": "CNI", "env": {**ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, **env}, "stdin": stdin}
        )


def _prev(veth: str, ip: str) -> dict:
    return {
        **PREV_RESULT,
        "interfaces": [PREV_RESULT["interfaces"][0], {"name": veth, "mac": "02:00:00:00:00:02"}, PREV_RESULT["interfaces"][2]],
        "ips": [{"address": f"{ip}/24", "interface": 2}],
    }


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    links: list = []
    monkeypatch.setattr("enforcer.node.cni_server.set_link", lambda ifname, **change: links.append((ifname, change)))
    with InProcess(tmp_path, links) as node:
        yield node


def _wait(what: str, fact: Callable[[], object]) -> None:
    from enforcer.testbed.simulation import wait_until

    wait_until(what, fact, timeout=60, poll=0.005)


def test_the_enforcer_runs_a_forwarded_add_and_answers_once_the_pod_is_programmed(in_process) -> None:
    reply = in_process.cni("ADD", "c1", _prev("veth1", "10.244.1.9"))
    assert reply == {"code": 0, "stdout": json.dumps(_prev("veth1", "10.244.1.9")), "stderr": ""}
    record = read_record(in_process.state_dir, "c1")
    assert record.host_ifname == "veth1" and in_process.enforcer.is_programmed(record)
    assert in_process.links == [("veth1", {"alias": "nftpolicy x/p c1"})], "tagged over netlink"
    assert in_process.cni("CHECK", "c1", _prev("veth1", "10.244.1.9"))["code"] == 0
    assert in_process.cni("DEL", "c1", _prev("veth1", "10.244.1.9")) == {"code": 0, "stdout": "", "stderr": ""}
    assert read_record(in_process.state_dir, "c1") is None


def test_a_refused_registration_is_held_down_over_netlink_and_said_on_stderr(in_process) -> None:
    assert in_process.cni("ADD", "c1", _prev("veth1", "10.244.1.9"))["code"] == 0
    reply = in_process.cni("ADD", "c2", _prev("veth2", "10.244.1.9"))
    assert reply["code"] == 0 and "veth2 held down until the enforcer programs it" in reply["stderr"], reply
    assert ("veth2", {"up": False}) in in_process.links and read_record(in_process.state_dir, "c2").held


@pytest.mark.parametrize(
    "request_",
    [
        {"command": "CNI"},
        {"command": "CNI", "env": {"CNI_COMMAND": "ADD"}},
        {"command": "CNI", "env": [], "stdin": "{}"},
        {"command": "CNI", "env": {"CNI_COMMAND": 5}, "stdin": "{}"},
        {"command": "CNI", "env": {}, "stdin": None},
    ],
    ids=["nothing", "no stdin", "env a list", "env with a number", "stdin null"],
)
def test_a_malformed_cni_request_gets_a_cni_error(in_process, request_) -> None:
    reply = in_process.server.answer(request_)
    assert reply["code"] == 1 and json.loads(reply["stdout"])["code"] == plugin.INTERNAL_ERROR


@pytest.mark.parametrize(
    "request_", [[], "ADD", 5, None, {"command": "EXPLODE"}], ids=["list", "string", "number", "null", "command"]
)
def test_a_request_that_is_not_an_object_is_refused(in_process, request_) -> None:
    assert in_process.server.answer(request_)["ok"] is False


def test_a_spooled_add_is_run_when_the_server_starts_and_a_spooled_del_is_not(tmp_path, monkeypatch) -> None:
    links: list = []
    monkeypatch.setattr("enforcer.node.cni_server.set_link", lambda ifname, **change: links.append((ifname, change)))
    node = InProcess(tmp_path, links)
    pending = node.state_dir / "pending"
    pending.mkdir(parents=True)
    stdin = json.dumps({**node.conf, "failOpen": True, "prevResult": _prev("veth1", "10.244.1.9")})
    (pending / "c1.json").write_text(
        json.dumps({"command": "CNI", "env": {**ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1"}, "stdin": stdin})
    )
    (pending / "c2.json").write_text(
        json.dumps({"command": "CNI", "env": {**ENV, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c2"}, "stdin": stdin})
    )
    (pending / "c3.json").write_text("{not json")
    with node:
        _wait("the spooled ADD run", lambda: not any(pending.iterdir()) and read_record(node.state_dir, "c1"))
        assert node.enforcer.is_programmed(read_record(node.state_dir, "c1"))
        assert read_record(node.state_dir, "c2") is None
        # One spooled while the server runs: it looks again when the directory changes.
        (pending / "c4.json").write_text(
            json.dumps(
                {
                    "command": "CNI",
                    "env": {**ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c4"},
                    "stdin": stdin.replace("veth1", "veth4").replace("10.244.1.9", "10.244.1.4"),
                }
            )
        )
        _wait("the second spooled ADD run", lambda: not (pending / "c4.json").exists() and read_record(node.state_dir, "c4"))


def test_a_del_takes_back_a_spooled_add(in_process) -> None:
    pending = in_process.state_dir / "pending"
    pending.mkdir(parents=True)
    (pending / "c1.json").write_text("{}")
    assert in_process.cni("DEL", "c1", _prev("veth1", "10.244.1.9"))["code"] == 0
    assert not (pending / "c1.json").exists()


# --- 5. on a simulated node, with a real enforcer ----------------------------


@pytest.fixture(scope="module")
def shim_bed(tmp_path_factory, shim):
    """One node whose plugin is the shim; x/a and x/b, no policy."""
    from enforcer.testbed.simulation import Testbed

    with Testbed(tmp_path_factory.mktemp("shim"), nodes=1, cni_form="shim", shim=shim) as bed:
        bed.namespace("x")
        node = bed.nodes[0]
        node.start_enforcer()
        node.add_pod("x/a", {"app": "a"}, publish=False)
        node.add_pod("x/b", {"app": "b"}, publish=False)
        bed.publish()
        bed.wait_converged()
        yield bed


def _wire(node, key: str, own_changes: dict | None = None):
    """A pod's netns and bridge's ADD, then the shim's ADD with the node's entry (changed): (pod, code, output, prev)."""
    import uuid

    from enforcer.testbed.simulation import SimulatedPod, sh

    namespace, name = key.split("/")
    pod = SimulatedPod(namespace, name, node, f"{node.bed.prefix}-p{next(node.bed.counter)}", uuid.uuid4().hex, {"app": name}, [])
    sh("ip", "netns", "add", pod.netns)
    bridge, own = node.conflist()["plugins"]
    code, prev = node.run_plugin(bridge, "ADD", pod, None, "1.0.0")
    assert code == 0, prev
    pod.result = prev
    code, out = node.run_plugin({**own, **(own_changes or {})}, "ADD", pod, prev, "1.0.0")
    return pod, code, out, prev


@pytest.mark.kernel
def test_an_add_while_the_enforcer_is_down_fails_so_the_runtime_tries_again_later(shim_bed) -> None:
    node = shim_bed.nodes[0]
    node.stop_enforcer()
    try:
        pod, code, out, _ = _wire(node, "x/late")
        assert code == 1 and out["code"] == 11 and str(node.socket) in out["msg"], out
        assert read_record(node.state_dir, pod.container_id) is None, "no record: the runtime tears the sandbox down"
        node.pods[pod.key] = pod
        node.delete_pod(pod.key, publish=False)  # the runtime's teardown: DEL through the whole chain succeeds
    finally:
        node.start_enforcer()
        node.wait_converged()


@pytest.mark.kernel
def test_a_fail_open_add_while_the_enforcer_is_down_is_run_by_the_enforcer_when_it_is_back(shim_bed) -> None:
    from enforcer.testbed.simulation import in_ns, wait_until

    node = shim_bed.nodes[0]
    node.stop_enforcer()
    try:
        pod, code, out, prev = _wire(node, "x/open", {"failOpen": True})
        node.pods[pod.key] = pod
    finally:
        node.start_enforcer()
    try:
        assert code == 0 and out == prev, out
        spooled = node.state_dir / "pending" / f"{pod.container_id}.json"
        wait_until(
            "the enforcer to run the spooled ADD", lambda: not spooled.exists() and read_record(node.state_dir, pod.container_id)
        )
        pod.start_agent()
        shim_bed.publish()
        node.wait_converged()
        assert f"alias nftpolicy {pod.key}" in in_ns(node.netns, "ip", "link", "show", pod.host_ifname).stdout
        assert shim_bed.pod("x/a").connects(pod.ip(4), 80) and pod.connects(shim_bed.pod("x/a").ip(4), 80), (
            "its port is registered: an unregistered one passes nothing"
        )
    finally:
        node.delete_pod(pod.key)
        node.wait_converged()


@pytest.mark.kernel
def test_a_del_while_the_enforcer_is_down_removes_the_record(shim_bed) -> None:
    node = shim_bed.nodes[0]
    pod = node.add_pod("x/gone", publish=False)
    shim_bed.publish()
    node.wait_converged()
    node.stop_enforcer()
    try:
        node.delete_pod(pod.key, publish=False)
        assert read_record(node.state_dir, pod.container_id) is None
    finally:
        node.start_enforcer()
        shim_bed.publish()
        node.wait_converged()
    assert shim_bed.pod("x/b").connects(shim_bed.pod("x/a").ip(4), 80)


@pytest.mark.kernel
def test_a_refused_registration_holds_the_veth_down_from_inside_the_enforcer(shim_bed) -> None:
    """The enforcer's container has a read-only /sys: the in-process plugin holds (and tags) over netlink."""
    from enforcer.testbed.simulation import in_ns

    node = shim_bed.nodes[0]
    a = shim_bed.pod("x/a")
    veth = "vethshimx"
    prev = {
        **a.result,
        "interfaces": [
            {"name": "cni0"},
            {"name": veth, "mac": "02:00:00:00:0a:01"},
            {"name": "eth0", "sandbox": "/var/run/netns/none", "mac": "02:00:00:00:0a:02"},
        ],
    }
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "podnet", **node.conflist()["plugins"][1], "prevResult": prev})
    env = {
        **ENV,
        "CNI_CONTAINERID": "thief",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=thief",
    }
    in_ns(node.netns, "ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
    try:
        in_ns(node.netns, "ip", "link", "set", veth, "master", "cni0", "up")
        in_ns(node.netns, "ip", "link", "set", f"{veth}p", "up")
        result = subprocess.run(
            ["ip", "netns", "exec", node.netns, str(shim_bed.cni_bin / "nftpolicy")],
            input=stdin.encode(),
            env={"CNI_COMMAND": "ADD", **env},
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0 and json.loads(result.stdout) == prev, result
        assert b"held down until the enforcer programs it" in result.stderr, result.stderr
        assert read_record(node.state_dir, "thief").held
        link = json.loads(in_ns(node.netns, "ip", "-j", "link", "show", veth).stdout)[0]
        assert "UP" not in link["flags"] and link["ifalias"] == "nftpolicy x/thief thief", link
        assert shim_bed.pod("x/b").connects(a.ip(4), 80), "x/a keeps its address"
    finally:
        subprocess.run(
            ["ip", "netns", "exec", node.netns, str(shim_bed.cni_bin / "nftpolicy")],
            input=stdin.encode(),
            env={"CNI_COMMAND": "DEL", **env},
            capture_output=True,
            timeout=60,
        )
        in_ns(node.netns, "ip", "link", "delete", veth, check=False)
        node.wait_converged()
