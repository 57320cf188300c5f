"""gifee agent: the node agent (the kubelet\x27s job)."""
