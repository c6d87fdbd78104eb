// Wrapper module that builds the upstream ClusterNetworkPolicy conformance
// suite, sigs.k8s.io/network-policy-api/conformance (unmodified; its test
// manifests are embedded in the binary), as a test binary: see
// scripts/build-conformance. Kept apart from ../node and ../kube so that its
// client-go and controller-runtime versions touch nothing else.
package conformance

import (
	_ "sigs.k8s.io/network-policy-api/conformance/tests"
)
