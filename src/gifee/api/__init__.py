"""The Kubernetes-compatible API server (`gifee apiserver`); see docs/API.md."""
