"""Offline RL agents for seqeval; see algorithms/base.py for the interface."""
