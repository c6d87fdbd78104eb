// Command e2e-images prints the container images the Netpol e2e specs need at
// run time, as the e2e framework's image manifest (k8s.io/kubernetes
// test/utils/image, pinned in ../../go.mod) names them, one "NAME REFERENCE"
// line each. scripts/build-node writes them to <bin>/e2e-images.txt and
// <bin>/agnhost.image, so image names can never drift from what the test
// binary asks for. Run it without KUBE_TEST_REPO_LIST for upstream's names.
//
//   - agnhost: every Netpol pod runs it (test/e2e/network/netpol/model.go:
//     "/agnhost porter" serves, "/agnhost connect" probes via pod exec).
//   - pause: the pod sandbox image. The kubelet no longer picks it (the CRI
//     runtime does; containerd 2.4's default is the same reference), and the
//     framework does not prepull anything unless --prepull-images is given.
package main

import (
	"fmt"

	imageutils "k8s.io/kubernetes/test/utils/image"
)

func main() {
	fmt.Println("agnhost", imageutils.GetE2EImage(imageutils.Agnhost))
	fmt.Println("pause", imageutils.GetPauseImageName())
}
