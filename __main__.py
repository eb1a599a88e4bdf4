"""Pulumi entry point: validate the stack's config, build its platform, export what users need."""

import pulumi

from stacks.config import ConfigError, load_settings
from stacks.platform import build_platform

try:
    settings = load_settings()
except ConfigError as error:
    # RunError ends the program with this message alone, no traceback, before any resource exists.
    raise pulumi.RunError(str(error)) from None

for key, value in build_platform(settings).items():
    pulumi.export(key, value)
