// Command nftpolicy is the CNI plugin as a node runs it: a small static
// executable that forwards each CNI call to the nftpolicy enforcer on the
// node, which runs the plugin's logic (cni/plugin.py) in-process and answers
// with the exit code, stdout and stderr the runtime gets. The node needs no
// Python; there is one implementation of the plugin's semantics, the
// enforcer's.
//
// The exchange, over the enforcer's unix socket (the config's "socket",
// default /run/nftpolicy/cni.sock), is one JSON line each way:
//
//	-> {"command": "CNI", "env": {"CNI_COMMAND": "ADD", ...}, "stdin": "<the network configuration>"}
//	<- {"code": 0, "stdout": "<the result>", "stderr": ""}
//
// Answered here, without the enforcer:
//
//   - VERSION, exactly as cni/plugin.py answers it.
//   - Calls that cannot be forwarded: stdin that is not a JSON object, an
//     unsupported cniVersion, an unknown command, and unusable stateDir,
//     socket or timeoutSeconds; with cni/plugin.py's codes and messages.
//   - The enforcer unreachable (no socket, refused, no answer within
//     timeoutSeconds plus a grace):
//     ADD fails with code 11, "try again later", naming the socket and the
//     error: the runtime tears the sandbox down and retries later, so no pod
//     starts unprotected. This differs from the Python form, which let ADD
//     succeed with the pod's veth held down until the enforcer programmed it.
//     With "failOpen": true, ADD prints prevResult back and succeeds, and
//     spools the call in <stateDir>/pending/<CNI_CONTAINERID>.json; the
//     enforcer runs it when it is back, so the pod gets its record and rules.
//     DEL removes <stateDir>/pods/<CNI_CONTAINERID>.json (and a spooled ADD)
//     and succeeds: the enforcer drops the pod when it next reads the records.
//     CHECK and GC fail with code 11, STATUS with code 50 (CNI 1.1: plugin
//     not available), naming the socket.
//
// Whatever the input, the answer is an exit code and CNI JSON, never a panic.
package main

import (
	"os"
	"strings"
)

func main() {
	env := map[string]string{}
	for _, entry := range os.Environ() {
		if name, value, _ := strings.Cut(entry, "="); strings.HasPrefix(name, "CNI_") {
			env[name] = value
		}
	}
	os.Exit(run(env, os.Stdin, os.Stdout, os.Stderr))
}
