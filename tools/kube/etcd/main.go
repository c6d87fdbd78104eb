// Command etcd is upstream etcd's main (go.etcd.io/etcd/v3's main.go), built
// from the go.etcd.io/etcd/server/v3 module pinned in go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
