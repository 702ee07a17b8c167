"""Registry hygiene: ECR lifecycle rules on any registry (the policy and its evaluation), the
registry walker, ``prune`` and ``inventory`` (commands, not release stages)."""
