"""seqeval: sequential evaluation of offline RL agents (data-efficiency curves)."""

__version__ = "0.1.0"
