"""The node's services beside the sync loop: the CNI socket (``cni_server``),
the plugin's installer (``cni_install``), links (``links``), conntrack
(``conntrack``) and NFLOG (``nflog``)."""
