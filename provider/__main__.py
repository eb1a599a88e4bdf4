"""Entry point of the ``tfplatform`` component package: the Pulumi python language host runs this file when
``pulumi package add`` (or a program using the package) starts the plugin, and the host answers GetSchema and
Construct for the wrappers below (pulumi/provider/experimental/host.py)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The wrappers import the repository's components/ (one level up): the whole repository is the package's
# source (a git URL with the path `provider`, or a local checkout). The plugin directory itself comes off the
# path so its module names never shadow an installed package's.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from pulumi.provider.experimental import component_provider_host

from provider import COMPONENTS, PACKAGE, VERSION

if __name__ == "__main__":
    component_provider_host(components=COMPONENTS, name=PACKAGE, version=VERSION)
