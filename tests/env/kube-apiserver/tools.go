//go:build tools

// Package tools pins kube-apiserver into this module's dependency graph.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
