"""The CI trust bootstrap: identities and secrets keys that must exist before the main stacks (README.md)."""
