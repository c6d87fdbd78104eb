"""The chained CNI plugin ``nftpolicy``: registers a pod's interface and IPs
with the local enforcer at ADD, so the pod is protected before its first packet.

A leaf, stdlib only: the plugin (``plugin``), the pod records it shares with
the enforcer (``records``) and its start-up-cheap JSON (``lean_json``). The
enforcer imports ``cni.records``; nothing here imports the enforcer, so the
installer ships this package alone."""
