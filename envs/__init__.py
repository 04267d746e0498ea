"""Environments and local D4RL-style dataset building for seqeval."""
