//go:build tools

// Package tools pins the helm CLI into this module's dependency graph.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
