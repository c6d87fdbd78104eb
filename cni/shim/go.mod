module nftpolicy/cni/shim

go 1.19
