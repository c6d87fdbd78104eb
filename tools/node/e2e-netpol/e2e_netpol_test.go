// Package e2enetpol is upstream's e2e test main (k8s.io/kubernetes
// test/e2e/e2e_test.go, pinned in ../go.mod) cut down to the network policy
// specs: it registers the same framework flags and runs the same
// e2e.RunE2ETests, but links only test/e2e/network/netpol. The spec code is
// upstream's, unmodified. scripts/build-node builds it with `go test -c` into
// <bin>/e2e-netpol.test; run it like e2e.test, e.g.
//
//	e2e-netpol.test --kubeconfig=... --ginkgo.focus='\[sig-network\] Netpol'
package e2enetpol

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"

	// test sources: only the network policy specs.
	_ "k8s.io/kubernetes/test/e2e/network/netpol"

	// reconfigure framework: dump namespace info when a spec fails.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
)

// handleFlags sets up all flags and parses the command line, as upstream's
// test/e2e/e2e_test.go does (less logcheck, whose invariant specs are not
// linked in).
func handleFlags() {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
}

func TestMain(m *testing.M) {
	var versionFlag bool
	flag.CommandLine.BoolVar(&versionFlag, "version", false, "Displays version information.")

	handleFlags()

	if versionFlag {
		fmt.Printf("%s\n", version.Get())
		os.Exit(0)
	}

	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unknown additional command line arguments: %s", flag.CommandLine.Args())
		os.Exit(1)
	}

	framework.AfterReadingAllFlags(&framework.TestContext)

	os.Exit(m.Run())
}

func TestE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
