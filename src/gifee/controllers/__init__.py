"""The controllers: pure reconcile cores (one module per controller) and the shell that
runs them as level-triggered loops against the API server (framework, manager)."""
