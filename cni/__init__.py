"""The chained CNI plugin ``nftpolicy``: registers a pod's interface and IPs
with the local enforcer at ADD, so the pod is protected before its first packet."""
