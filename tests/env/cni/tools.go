//go:build tools

// Package tools pins the CNI plugins the test node uses (tests/env/node.sh) into this wrapper
// module's dependency graph, so `go build` inside it builds them at the version go.mod requires.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
)
