"""The plugin executable that goes into the CNI bin directory.

A two-line Python script pinned to one interpreter and source tree: ``-IS``
skips site-packages and the environment, so start-up stays at the
interpreter's minimum (the plugin needs only the stdlib and this package).
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def plugin_script(python: str = sys.executable, root: Path = PACKAGE_ROOT) -> str:
    return (
        f"#!{python} -IS\n"
        f"import sys; sys.path.insert(0, {str(root)!r})\n"
        "from cni.plugin import main; sys.exit(main())\n"
    )


def install_plugin(bin_dir: str | Path, name: str = "nftpolicy") -> Path:
    """Write the executable atomically into ``bin_dir``."""
    target = Path(bin_dir) / name
    tmp = target.with_name(f".{name}.tmp")
    tmp.write_text(plugin_script())
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, target)
    return target
