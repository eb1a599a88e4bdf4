"""The tfserving-platform CrossGuard policy pack (``rules``), importable by the tests as ``policy.rules``."""
