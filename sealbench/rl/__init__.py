"""SEAL's RL loop (ReST-EM) over any task family: rounds, keep rules, policy SFT (loop.py), and the
policy as an artifact that runs find or train before they start (policy.py)."""
from .loop import ensure_policy, select_kept, train
from .policy import Policy, ReadyPolicy, policy_config

__all__ = ["Policy", "ReadyPolicy", "ensure_policy", "policy_config", "select_kept", "train"]
