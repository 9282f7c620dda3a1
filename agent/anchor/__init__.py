"""Anchoring the seal log to an EVM chain: the node's RPC and the gateway's chain account."""
