"""The service data plane: nftables rules from services and endpoints (`gifee proxy`),
pod routes between nodes, node pod-CIDR assignment."""
