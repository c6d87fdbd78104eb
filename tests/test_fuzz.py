"""Bounded fuzzing (issue 8, item 5) with hypothesis: the CNI plugin's stdin
and environment, the policy loader, and the pod-record parser. Each property
is "a clear error or a value, never anything else"; example counts and
deadlines keep the whole file well under a minute (CI runs it in full).

Known bugs are not fuzzed around silently: each has a deterministic strict
xfail here or in test_hostile_input.py (B-numbers as in that module), and the
fuzz steers clear of exactly that input class so it can find new ones:

- the in-process CNI fuzz tolerates an exception only when it matches a
  known bug's signature (exception type and the plugin function raising it,
  ``KNOWN_PLUGIN_BUGS``), and counts it as a hypothesis ``event``;
- the kernel fuzz of rendered states skips states with two local pods on one
  IP (B15).

Safety of the in-process CNI fuzz: ``stateDir`` and ``socket`` always point
into a temporary directory (also as the plugin's defaults, for configs that
omit them); the socket does not exist, so ADD, CHECK, GC and STATUS take their
"enforcer unreachable" paths. On that path ADD would run ``ip link set <veth>
down`` and write ``/sys/class/net/<veth>/ifalias`` in the host's namespace for
whatever veth name the fuzz made up, so ``hold_down`` and ``tag_interface``
are replaced by recorders (``hold_down`` fails as ``ip`` does for a link that
does not exist). What those two do with hostile names is pinned through the
real executable in test_hostile_input.py (B5, B6).
"""

from __future__ import annotations

import copy
import io
import json
import string
import traceback
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from builders import namespace, pod, policy
from cni import plugin
from cni import lean_json, records
from cni.records import PodRecord, RecordError
from rules.load import InvalidObject, state_from_objects
from rules.model import ClusterState, PodInterface
from rules.nft import render_text
from rules.ir import local_pods
from rules.translate import desired_ruleset
from strategies import cluster_states

# Bounded: about 15 s for the whole file on this 2-core machine; deadlines are
# generous (examples take milliseconds) so a loaded machine does not flake.
FAST = settings(
    max_examples=400, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
KERNEL = settings(
    max_examples=30,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# --- JSON and text ------------------------------------------------------------

# Strict JSON, as a container runtime or the API sends it: no NaN or Infinity.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
INTERESTING = st.sampled_from(
    [
        "",
        " ",
        "0.4.0",
        "1.0.0",
        "1.1.0",
        "ADD",
        "veth0",
        "eth0",
        "../x",
        "/",
        ".",
        "a/b",
        "10.0.0.1",
        "10.0.0.1/24",
        "fd00::1/64",
        "not-an-ip/24",
        "02:00:00:00:00:01",
        "TCP",
        "UDP",
        "SCTP",
        "Ingress",
        "Egress",
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "List",
        "PodList",
        "Pod",
        "Namespace",
        "NetworkPolicy",
        "Node",
        "x",
        "app",
        "http",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        -1,
        0,
        1,
        65535,
        65536,
        10**30,
        1e300,
        -0.0,
        0.5,
        True,
        False,
        None,
        [],
        {},
        "é",
        "\u202e",
    ]
)
KEYS = st.text(max_size=10) | st.sampled_from(
    [
        "",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "spec",
        "status",
        "items",
        "podSelector",
        "ingress",
        "egress",
        "from",
        "to",
        "ports",
        "port",
        "endPort",
        "interfaces",
        "ips",
        "address",
        "mac",
        "sandbox",
        "interface",
        "containerID",
    ]
)
JSON_VALUES = st.recursive(
    SCALARS | INTERESTING,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, base):
    """``base`` with one to four fields dropped, replaced by random JSON or by
    another field's value (which often keeps the object valid), or added."""
    doc = copy.deepcopy(base)
    leaves = [_at(base, p) for p in _paths(base) if not isinstance(_at(base, p), (dict, list))]
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        action = draw(st.sampled_from(("replace", "borrow", "borrow", "delete", "add")))
        if action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "borrow":
            parent[key] = copy.deepcopy(draw(st.sampled_from(leaves)))
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON_VALUES)
        else:
            parent.insert(key, draw(JSON_VALUES))
    return doc


# --- 1. the CNI plugin, in process ---------------------------------------------

ENV_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)  # what execve can carry
CNI_ARGS = st.lists(
    st.tuples(
        st.sampled_from(("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID", "IgnoreUnknown", "IP")) | ENV_TEXT,
        st.sampled_from(("=", "", "==")),
        ENV_TEXT,
    ).map("".join)
    | ENV_TEXT,
    max_size=5,
).map(";".join)
ENVS = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "CNI_COMMAND": st.sampled_from(("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")) | ENV_TEXT,
            "CNI_CONTAINERID": st.sampled_from(("c0ffee", "fuzz-1")) | ENV_TEXT,
            "CNI_NETNS": st.just("/var/run/netns/p") | ENV_TEXT,
            "CNI_IFNAME": st.just("eth0") | ENV_TEXT,
            "CNI_ARGS": st.just("K8S_POD_NAMESPACE=x;K8S_POD_NAME=p;K8S_POD_UID=u") | CNI_ARGS,
            "CNI_PATH": ENV_TEXT,
        },
    ),
    st.dictionaries(ENV_TEXT, ENV_TEXT, max_size=3),
).map(lambda parts: {**parts[1], **parts[0]})

PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": "vethfuzz0", "mac": "02:00:00:00:00:02"},
        {"name": "eth0", "sandbox": "/var/run/netns/p", "mac": "02:00:00:00:00:03"},
    ],
    "ips": [
        {"address": "10.244.1.9/24", "gateway": "10.244.1.1", "interface": 2},
        {"address": "fd00:10:244:1::9/64", "interface": 2},
    ],
}
VALID_CONF = {
    "cniVersion": "1.0.0",
    "name": "podnet",
    "type": "nftpolicy",
    "timeoutSeconds": 0.2,
    "failOpen": False,
    "prevResult": PREV_RESULT,
    "cni.dev/valid-attachments": [{"containerID": "c0ffee", "ifname": "eth0"}],
}


@pytest.fixture(scope="module")
def cni_sandbox(tmp_path_factory):
    """State dir and (absent) socket in a temporary directory; recorders for the host-touching helpers."""
    root = tmp_path_factory.mktemp("cni-fuzz")
    state_dir, sock = str(root / "state"), str(root / "absent.sock")
    touched = {"tag": [], "hold": []}

    def tag_interface(host_ifname, record) -> None:
        touched["tag"].append(host_ifname)

    def hold_down(host_ifname) -> None:
        touched["hold"].append(host_ifname)
        raise plugin.CniError(plugin.IO_FAILURE, f"cannot hold {host_ifname} down: no such device (fuzz)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugin, "DEFAULT_STATE_DIR", state_dir)
        mp.setattr(plugin, "DEFAULT_SOCKET", sock)
        mp.setattr(plugin, "tag_interface", tag_interface)
        mp.setattr(plugin, "hold_down", hold_down)
        yield state_dir, sock, touched


def _confined(conf, state_dir: str, sock: str):
    if isinstance(conf, dict):
        conf = {**conf, "stateDir": state_dir, "socket": sock}
    return conf


STDINS = st.one_of(
    st.text(max_size=200),
    JSON_VALUES.map(lambda v: ("json", v)),
    mutated(VALID_CONF).map(lambda v: ("json", v)),
    st.just(("json", VALID_CONF)),
)

# (exception type, plugin function it escapes from, bug): known tracebacks. B7-B10 were fixed; none is open.
KNOWN_PLUGIN_BUGS: tuple = ()


def known_plugin_bug(e: BaseException) -> str | None:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/cni/" in f.filename or "/enforcer/" in f.filename]
    innermost = frames[-1].name if frames else None
    for types, where, bug in KNOWN_PLUGIN_BUGS:
        if isinstance(e, types) and innermost == where:
            return bug
    return None


def _reject_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def run_plugin(env: dict, stdin: str) -> tuple[int, str] | None:
    """``plugin.run``; None when it raised one of the known bugs."""
    out = io.StringIO()
    try:
        code = plugin.run(env, io.StringIO(stdin), out)
    except Exception as e:
        bug = known_plugin_bug(e)
        if bug is None:
            raise
        event(f"known bug {bug}")
        return None
    return code, out.getvalue()


def check_cni_result(result: tuple[int, str] | None, stdin: str) -> None:
    if result is None:
        return
    code, text = result
    assert isinstance(code, int) and not isinstance(code, bool)
    if code == 0 and not text:
        return  # DEL, CHECK, GC, STATUS print nothing on success
    # Exactly one JSON document; strict JSON (no NaN) unless stdin had it (the plugin echoes cniVersion and prevResult).
    strict = not any(word in stdin for word in ("NaN", "Infinity"))
    value = json.loads(text, parse_constant=_reject_constant if strict else None)
    assert isinstance(value, dict), text
    if code != 0:
        assert isinstance(value.get("code"), int) and not isinstance(value["code"], bool), value
        assert isinstance(value.get("msg"), str) and value["msg"], value
        assert value["code"] != plugin.INTERNAL_ERROR, f"a bug the plugin's last-resort handler caught: {value}"
    event(f"exit {code}" + (f", CNI code {value['code']}" if code else ""))


@FAST
@given(env=ENVS, stdin=STDINS)
@example(
    env={
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/n",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=p",
    },
    stdin=("json", VALID_CONF),
)
@example(env={"CNI_COMMAND": "ADD"}, stdin="[" * 100_000)
@example(env={"CNI_COMMAND": "VERSION"}, stdin="")
def test_the_cni_plugin_answers_any_environment_and_stdin_with_an_exit_code_and_one_json_object(cni_sandbox, env, stdin) -> None:
    state_dir, sock, _ = cni_sandbox
    if isinstance(stdin, tuple):
        stdin = json.dumps(_confined(stdin[1], state_dir, sock))
    check_cni_result(run_plugin(env, stdin), stdin)


ADD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "fuzz-add",
    "CNI_NETNS": "/var/run/netns/p",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=p;K8S_POD_UID=u",
}


@FAST
@given(
    command=st.sampled_from(("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")),
    conf=mutated(VALID_CONF),
    version=st.sampled_from(("0.4.0", "1.0.0", "1.1.0")),
)
def test_the_cni_plugin_answers_mutated_valid_configs_for_every_command(cni_sandbox, command, conf, version) -> None:
    """A valid environment, so the fuzz reaches each command's handling of the config."""
    state_dir, sock, touched = cni_sandbox
    conf = _confined({"cniVersion": version, **conf}, state_dir, sock)
    stdin = json.dumps(conf)
    result = run_plugin({**ADD_ENV, "CNI_COMMAND": command}, stdin)
    check_cni_result(result, stdin)
    if result is not None and command == "ADD" and result[0] == 0:
        assert json.loads(result[1]) == conf["prevResult"], "ADD passes prevResult through unchanged"


def _only_plugin_bug(e: BaseException, bug: str) -> None:
    assert known_plugin_bug(e) is not None and known_plugin_bug(e).startswith(bug), "".join(traceback.format_exception(e))


@pytest.mark.parametrize("command,timeout", [("STATUS", -1), ("STATUS", "nan"), ("ADD", 1e300), ("CHECK", "inf")])
def test_a_timeout_out_of_range_is_a_cni_error(cni_sandbox, command: str, timeout) -> None:
    state_dir, sock, _ = cni_sandbox
    conf = _confined({**VALID_CONF, "cniVersion": "1.1.0", "timeoutSeconds": timeout}, state_dir, sock)
    if command == "CHECK":  # a record to check
        records.write_record(state_dir, PodRecord("fuzz-add", "x", "p", "u", "vethfuzz0", None, ("10.244.1.9",)))
    out = io.StringIO()
    assert plugin.run({**ADD_ENV, "CNI_COMMAND": command}, io.StringIO(json.dumps(conf)), out) == 1
    assert "timeoutSeconds" in json.loads(out.getvalue())["msg"]


@pytest.mark.parametrize("ips", [5, 1.5, True])
def test_prev_result_ips_of_another_type_is_a_cni_error(cni_sandbox, ips) -> None:
    state_dir, sock, _ = cni_sandbox
    conf = _confined({**VALID_CONF, "prevResult": {**PREV_RESULT, "ips": ips}}, state_dir, sock)
    out = io.StringIO()
    assert plugin.run(ADD_ENV, io.StringIO(json.dumps(conf)), out) == 1
    assert "prevResult.ips" in json.loads(out.getvalue())["msg"]


def test_check_with_a_container_id_too_long_for_a_file_name_is_a_cni_error(cni_sandbox) -> None:
    state_dir, sock, _ = cni_sandbox
    out = io.StringIO()
    code = plugin.run(
        {**ADD_ENV, "CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c" * 300},
        io.StringIO(json.dumps(_confined(VALID_CONF, state_dir, sock))),
        out,
    )
    assert code == 1 and "container ID" in json.loads(out.getvalue())["msg"]


def test_gc_with_a_container_id_that_is_not_a_string_is_a_cni_error(cni_sandbox) -> None:
    state_dir, sock, _ = cni_sandbox
    conf = _confined(
        {**VALID_CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": ["c"]}]}, state_dir, sock
    )
    out = io.StringIO()
    assert plugin.run({**ADD_ENV, "CNI_COMMAND": "GC"}, io.StringIO(json.dumps(conf)), out) == 1
    assert "cni.dev/valid-attachments" in json.loads(out.getvalue())["msg"]


# --- 1b. the CNI shim executable (cni/shim), with no enforcer to forward to -----

# A process per example: fewer examples, the same properties as the plugin's.
SHIM_RUNS = settings(
    max_examples=150, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
FORWARDED = ("ADD", "DEL", "CHECK", "GC", "STATUS")


@pytest.fixture(scope="module")
def shim_sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("shim-fuzz")
    return str(root / "state"), str(root / "absent.sock")


def _confined_text(stdin: str, state_dir: str, sock: str) -> str:
    """Safety: every config the shim could act on names the temporary state dir
    and socket, never the defaults (/var/lib/nftpolicy, /run/nftpolicy)."""
    try:
        conf = json.loads(stdin) if stdin.strip() else {}
    except (ValueError, RecursionError):
        return stdin  # refused before anything is touched
    return json.dumps(_confined(conf, state_dir, sock)) if isinstance(conf, dict) else stdin


@SHIM_RUNS
@given(env=ENVS, stdin=STDINS)
@example(
    env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0"},
    stdin=("json", {**VALID_CONF, "failOpen": True}),
)
@example(env={"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c0ffee"}, stdin=("json", VALID_CONF))
@example(env={"CNI_COMMAND": "ADD"}, stdin="[" * 100_000)
def test_the_cni_shim_answers_any_environment_and_stdin_with_an_exit_code_and_one_json_object(
    shim, shim_sandbox, env, stdin
) -> None:
    import subprocess

    state_dir, sock = shim_sandbox
    stdin = json.dumps(_confined(stdin[1], state_dir, sock)) if isinstance(stdin, tuple) else stdin
    stdin = _confined_text(stdin, state_dir, sock)
    env = {k: v for k, v in env.items() if k and "=" not in k}
    result = subprocess.run([str(shim)], input=stdin.encode(errors="surrogatepass"), env=env, capture_output=True, timeout=60)
    assert b"panic" not in result.stderr and b"goroutine" not in result.stderr, result.stderr
    check_cni_result((result.returncode, result.stdout.decode()), stdin)


# --- 2. the policy loader -------------------------------------------------------

BASE_OBJECTS = [
    namespace("x", team="a"),
    namespace("y", team="b", env="prod"),
    {"kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}},
    {"kind": "Node", "metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}},
    pod("x/a", ["10.0.0.1", "fd00::1"], node="n1", labels={"app": "a"}, ports=[("http", 8080), ("dns", 53, "UDP")]),
    pod("x/b", "10.0.0.2", node="n1", labels={"app": "b", "tier": "be"}),
    pod("y/c", ["10.0.0.3", "fd00::3"], node="n2", labels={"app": "c"}, ports=[("http", 80)]),
    policy(
        "x/mixed",
        {
            "podSelector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["b", "c"]}]}},
                        {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.0.0.128/25"]}},
                    ],
                    "ports": [{"port": "http"}, {"port": 8000, "endPort": 8100}, {"protocol": "UDP", "port": 53}],
                }
            ],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/120"]}}, {"namespaceSelector": {}}],
                    "ports": [{"protocol": "SCTP"}, {"port": "dns", "protocol": "UDP"}],
                },
                {},
            ],
        },
    ),
    policy("y/deny", {"podSelector": {}}),
    {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "kind": "NetworkPolicy",
                "metadata": {"name": "in-list", "namespace": "y"},
                "spec": {"podSelector": {"matchLabels": {"app": "c"}}, "ingress": [{"from": [{"podSelector": {}}]}]},
            }
        ],
    },
    {
        "kind": "PodList",
        "items": [
            {
                "metadata": {"name": "d", "namespace": "y", "labels": {"app": "d"}},
                "spec": {"nodeName": "n1"},
                "status": {"podIP": "10.0.0.4"},
            }
        ],
    },
]
KINDS = ("Namespace", "Pod", "NetworkPolicy", "Node", "List", "PodList", "NetworkPolicyList", "ConfigMap")
RANDOM_OBJECTS = st.lists(
    JSON_VALUES
    | st.fixed_dictionaries(
        {"kind": st.sampled_from(KINDS) | st.text(max_size=8)},
        optional={
            "metadata": JSON_VALUES
            | st.fixed_dictionaries({}, optional={"name": JSON_VALUES, "namespace": JSON_VALUES, "labels": JSON_VALUES}),
            "spec": JSON_VALUES,
            "status": JSON_VALUES,
            "items": st.lists(JSON_VALUES, max_size=3),
        },
    ),
    max_size=5,
)


def _identities(value) -> set[str]:
    """Every way the loader may name an object of the input (the API's identity: ns/name, or kind and name)."""
    found = set()
    for path in _paths(value):
        obj = _at(value, path)
        if not isinstance(obj, dict):
            continue
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = meta.get("name") or "<unnamed>"
        found.add(f"{meta.get('namespace') or 'default'}/{name}")
        found |= {f"namespace {name}", f"node {name}"}
    return found


def load_or_refuse(objects) -> ClusterState | None:
    """The loader's property: a state, or an InvalidObject that starts with the object's identity."""
    try:
        state = state_from_objects(objects)
    except InvalidObject as e:
        message = str(e)
        assert message.startswith("input: ") or any(message.startswith(f"{i}: ") for i in _identities(objects)), message
        event("refused")
        return None
    assert isinstance(state, ClusterState)
    event("accepted")
    return state


def render_both_nodes(state: ClusterState) -> None:
    for node in ("n1", "n2"):
        assert render_text(desired_ruleset(state, node, local_interfaces(state, node)))


def local_interfaces(state: ClusterState, node: str) -> list[PodInterface]:
    """What CNI would have registered for the node's pods."""
    return [
        PodInterface(p.namespace, p.name, p.uid or f"c{i}", f"veth{i:04x}", f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", p.ips)
        for i, p in enumerate(local_pods(state, node))
    ]


@FAST
@given(RANDOM_OBJECTS)
def test_the_loader_takes_random_objects_or_refuses_them_naming_the_object(objects) -> None:
    state = load_or_refuse(objects)
    if state is not None:
        render_both_nodes(state)


@FAST
@given(mutated(BASE_OBJECTS))
@example(BASE_OBJECTS)
def test_the_loader_takes_mutated_valid_objects_or_refuses_them_naming_the_object_and_renders_what_it_takes(objects) -> None:
    state = load_or_refuse(objects)
    if state is not None:
        render_both_nodes(state)


def _two_local_pods_share_an_ip(state: ClusterState, node: str) -> bool:
    ips = [ip for p in local_pods(state, node) for ip in p.ips]
    return len(ips) != len(set(ips))


@pytest.fixture(scope="module")
def check_ns():
    from netns import netns

    with netns() as ns:
        yield ns


@pytest.mark.kernel
@KERNEL
@given(mutated(BASE_OBJECTS))
@example(BASE_OBJECTS)
def test_what_the_loader_accepts_renders_to_what_the_kernel_accepts(check_ns, objects) -> None:
    from netns import nft

    state = load_or_refuse(objects)
    assume(state is not None)
    assume(not _two_local_pods_share_an_ip(state, "n1"))  # B15: pinned in test_hostile_input.py
    result = nft(check_ns, "-c", "-f", "-", stdin=render_text(desired_ruleset(state, "n1", local_interfaces(state, "n1"))))
    assert result.returncode == 0, result.stderr[:2000]


@pytest.mark.kernel
@KERNEL
@given(cluster_states)
def test_random_valid_states_render_to_what_the_kernel_accepts(check_ns, state) -> None:
    """The model-level states of tests/strategies.py (valid by construction, unique pod IPs)."""
    from netns import nft

    result = nft(check_ns, "-c", "-f", "-", stdin=render_text(desired_ruleset(state, "n1", local_interfaces(state, "n1"))))
    assert result.returncode == 0, result.stderr[:2000]


# --- 3. pod records and the plugin's JSON ------------------------------------------

RECORD = PodRecord(
    "c0ffee", "x", "a", "uid-1", "veth1234", "02:00:00:00:00:01", ("10.0.0.2", "fd00::2"), "/var/run/netns/p", "eth0"
)
RECORD_DICT = json.loads(RECORD.to_json())
RECORD_TEXTS = st.one_of(
    st.text(max_size=200),
    st.text(string.printable, max_size=60),
    st.fixed_dictionaries({}, optional={k: JSON_VALUES for k in RECORD_DICT}).map(json.dumps),
    mutated(RECORD_DICT).map(json.dumps),
)


@FAST
@given(RECORD_TEXTS)
@example(RECORD.to_json())
def test_a_record_parses_or_is_a_value_or_type_error(text: str) -> None:
    try:
        record = PodRecord.from_json(text)
    except (ValueError, TypeError):
        event("refused")
        return
    assert isinstance(record, PodRecord)
    event("accepted")


@FAST
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_lean_json_reads_any_text_as_a_value_or_a_value_error(text: str) -> None:
    """Bytes as the plugin's stdin decodes them (surrogateescape)."""
    try:
        lean_json.loads(text)
    except ValueError:
        pass


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("records")
    (path / "pods").mkdir()
    return path


@FAST
@given(RECORD_TEXTS.map(str.encode))
def test_a_record_file_of_utf8_bytes_is_a_record_or_a_record_error(record_dir, data: bytes) -> None:
    (record_dir / "pods" / "fuzz.json").write_bytes(data)
    try:
        assert isinstance(records.read_record(record_dir, "fuzz"), PodRecord)
    except RecordError as e:
        assert "fuzz.json: corrupt record" in str(e)


@settings(max_examples=20, deadline=timedelta(seconds=2))
@given(st.binary(min_size=1, max_size=100).filter(lambda b: not _is_utf8(b)))
def test_a_record_file_that_is_not_utf8_is_a_record_error(record_dir, data: bytes) -> None:
    (record_dir / "pods" / "binary.json").write_bytes(data)
    with pytest.raises(RecordError, match="binary.json"):
        records.read_record(record_dir, "binary")


@pytest.mark.parametrize(
    "changes",
    [{"mac": ["02"]}, {"name": ["a"]}, {"ips": [["10.0.0.2"]]}, {"namespace": 7}, {"held": "no"}, {"host_ifname": None}],
    ids=["mac list", "name list", "ips nested", "namespace int", "held str", "host_ifname null"],
)
def test_a_record_with_fields_of_the_wrong_type_is_refused(changes: dict) -> None:
    with pytest.raises(ValueError):
        PodRecord.from_json(json.dumps({**RECORD_DICT, **changes}))
