module nftpolicy.local/images/pause

go 1.22
