"""Putting the CNI plugin on a node, and taking it off again.

``install`` puts the executable ``<bin dir>/nftpolicy`` in one of two forms:

- ``shim`` (the default where the image has it, at ``SHIM``): the static Go
  executable of ``cni/shim``, which forwards each call to the enforcer; the
  node needs no Python.
- ``python``: the plugin's few stdlib-only modules go into
  ``<bin dir>/nftpolicy.d/`` and a two-line script runs them with the node's
  own Python (``-IS``: no site-packages, no environment, so start-up stays at
  the interpreter's minimum).

Then ``{"type": "nftpolicy"}`` is inserted right after ``bridge`` in the
node's conflist. Idempotent; every other plugin keeps its place; the conflist
is written atomically and the original is kept as a backup. ``uninstall``
undoes both.

The conflist in force is the first ``*.conflist``, ``*.conf`` or ``*.json``
file of the conf dir in lexical order, as container runtimes pick it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where the cni package lies
PLUGIN = "nftpolicy"
SHIM = Path("/opt/nftpolicy/cni/nftpolicy")  # where the image has the shim (Dockerfile)
FORMS = ("shim", "python")
# The python form ships the ``cni`` package alone: stdlib only, it imports nothing else.
PLUGIN_FILES = ("cni/__init__.py", "cni/plugin.py", "cni/records.py", "cni/lean_json.py")
BACKUP_SUFFIX = ".nftpolicy-backup"


class InstallError(RuntimeError):
    """The node's CNI configuration cannot be changed safely; nothing was changed."""


def plugin_script(python: str) -> str:
    """The executable. It finds its modules beside itself (``nftpolicy.d``), not
    at a path baked in at install: the installer writes through its own mount
    of the node's bin dir (``/host/opt/cni/bin`` in the DaemonSet)."""
    return (
        f"#!{python} -IS\n"
        "import sys; sys.path.insert(0, __file__ + '.d')\n"
        "from cni.plugin import exit_with_main; exit_with_main()\n"
    )


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.nftpolicy-tmp")  # no .conf* suffix: runtimes ignore it
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def default_form(shim: str | Path = SHIM) -> str:
    """``shim`` where there is one to install (the image), else ``python``."""
    return "shim" if Path(shim).is_file() else "python"


def install_plugin(
    bin_dir: str | Path, python: str = "/usr/bin/python3", form: str | None = None, shim: str | Path = SHIM
) -> Path:
    """Write the plugin's executable into ``bin_dir``, in the given form (default: ``default_form``)."""
    bin_dir = Path(bin_dir)
    form = form or default_form(shim)
    executable = bin_dir / PLUGIN
    modules = bin_dir / f"{PLUGIN}.d"
    if form == "shim":
        if not Path(shim).is_file():
            raise InstallError(f"no shim executable at {shim}: build it (scripts/build-shim), or install --form python")
        tmp = executable.with_name(f".{PLUGIN}.nftpolicy-tmp")
        shutil.copyfile(shim, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, executable)
        shutil.rmtree(modules, ignore_errors=True)  # a python form's modules
        return executable
    if form != "python":
        raise InstallError(f"unknown plugin form {form!r}: expected one of {', '.join(FORMS)}")
    for relative in PLUGIN_FILES:
        target = modules / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(target, (PACKAGE_ROOT / relative).read_text())
    _write_atomic(executable, plugin_script(python), 0o755)
    return executable


def conf_files(conf_dir: str | Path) -> list[Path]:
    """CNI configuration files in the order runtimes consider them."""
    return sorted(p for p in Path(conf_dir).iterdir() if p.suffix in (".conflist", ".conf", ".json") and p.is_file())


def active_conf(conf_dir: str | Path) -> Path:
    files = conf_files(conf_dir)
    if not files:
        raise InstallError(f"{conf_dir}: no CNI configuration (*.conflist, *.conf, *.json) to chain nftpolicy into")
    return files[0]


def _load(path: Path) -> dict:
    try:
        conf = json.loads(path.read_text())
    except ValueError as e:
        raise InstallError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(conf, dict):
        raise InstallError(f"{path}: must be a JSON object")
    if "plugins" not in conf:
        raise InstallError(
            f'{path}: a single-plugin configuration (no "plugins" list); nftpolicy must be chained '
            "after bridge in a .conflist: convert it first"
        )
    if not isinstance(conf["plugins"], list) or not all(isinstance(p, dict) for p in conf["plugins"]):
        raise InstallError(f"{path}: plugins: must be a list of objects")
    return conf


def chained(conf: dict, entry: dict, path: Path) -> dict:
    """The conflist with ``entry`` right after bridge; unchanged if it is there already."""
    plugins = conf["plugins"]
    types = [p.get("type") for p in plugins]
    if "bridge" not in types:
        raise InstallError(f"{path}: plugins: no bridge plugin to chain nftpolicy after (types: {types})")
    at = types.index("bridge") + 1
    if types.count(PLUGIN) == 1 and types.index(PLUGIN) == at:
        return conf
    others = [p for p in plugins if p.get("type") != PLUGIN]
    at = [p.get("type") for p in others].index("bridge") + 1
    return {**conf, "plugins": others[:at] + [entry] + others[at:]}


def install(
    conf_dir: str | Path,
    bin_dir: str | Path,
    entry: dict | None = None,
    python: str = "/usr/bin/python3",
    form: str | None = None,
    shim: str | Path = SHIM,
) -> Path:
    """Install the plugin and chain it; returns the conflist changed. Checks before it writes."""
    path = active_conf(conf_dir)
    conf = _load(path)
    new = chained(conf, {"type": PLUGIN, **(entry or {})}, path)
    install_plugin(bin_dir, python, form, shim)
    if new != conf:
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        if not backup.exists():
            shutil.copy2(path, backup)
        _write_atomic(path, json.dumps(new, indent=2) + "\n", stat.S_IMODE(path.stat().st_mode))
    return path


def uninstall(conf_dir: str | Path, bin_dir: str | Path) -> Path | None:
    """Unchain the plugin (every other plugin stays as it is) and remove it.
    A conflist it cannot read is refused, and then nothing is removed."""
    files = conf_files(conf_dir)
    path = files[0] if files else None
    if path is not None:
        conf = _load(path)
        if any(p.get("type") == PLUGIN for p in conf["plugins"]):
            kept = {**conf, "plugins": [p for p in conf["plugins"] if p.get("type") != PLUGIN]}
            _write_atomic(path, json.dumps(kept, indent=2) + "\n", stat.S_IMODE(path.stat().st_mode))
        path.with_name(path.name + BACKUP_SUFFIX).unlink(missing_ok=True)
    bin_dir = Path(bin_dir)
    (bin_dir / PLUGIN).unlink(missing_ok=True)
    shutil.rmtree(bin_dir / f"{PLUGIN}.d", ignore_errors=True)
    return path
