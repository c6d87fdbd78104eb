#!/usr/bin/env python3
"""Give a docker-archive tarball exactly the image names REF...

``buildah push IMAGE docker-archive:PATH:REF`` records one name; an image a
kubelet may ask for under several (pause for containerd 2.x and 1.6, nftpolicy
under its version, ``dev`` and the DaemonSet's short name) needs them all in
``manifest.json``'s ``RepoTags``, which ``ctr images import`` (and ``docker
load``) turn into one image record each. The archive is rewritten next to
itself and swapped in atomically; layers are copied unchanged.

Usage: archive-tags.py ARCHIVE REF [REF...]
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile


def retag(archive: str, refs: list[str]) -> None:
    tmp = f"{archive}.retag-tmp"
    with tarfile.open(archive) as src:
        members = src.getmembers()
        names = {m.name for m in members}
        manifest = json.load(src.extractfile("manifest.json"))
        if len(manifest) != 1:
            raise SystemExit(f"{archive}: {len(manifest)} images in manifest.json, expected 1")
        entry = manifest[0]
        missing = [p for p in [entry["Config"], *entry["Layers"]] if p not in names]
        if missing:
            raise SystemExit(f"{archive}: manifest.json names files the archive lacks: {missing}")
        entry["RepoTags"] = refs
        # The legacy "repositories" file, {repo: {tag: top legacy layer id}}:
        # the same id for every name, taken from the one buildah wrote.
        rewritten = {}
        if "repositories" in names:
            old = json.load(src.extractfile("repositories"))
            top = next(iter(next(iter(old.values())).values()))
            repositories: dict[str, dict[str, str]] = {}
            for ref in refs:
                repo, _, tag = ref.rpartition(":")
                repositories.setdefault(repo, {})[tag] = top
            rewritten["repositories"] = json.dumps(repositories, separators=(",", ":")).encode()
        rewritten["manifest.json"] = json.dumps(manifest, separators=(",", ":")).encode()
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as dst:
            for m in members:
                if m.name in rewritten:
                    continue
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
            for name, data in rewritten.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o444
                dst.addfile(info, io.BytesIO(data))
    os.replace(tmp, archive)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.rsplit("Usage: ", 1)[1].strip())
    retag(sys.argv[1], sys.argv[2:])
