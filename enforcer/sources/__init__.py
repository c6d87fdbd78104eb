"""Where the cluster state comes from: a directory of manifests (``directory``,
for simulated nodes and offline use) or the Kubernetes API (``kubernetes``).
Both are polled by the daemon through the same small ``Source`` interface."""
