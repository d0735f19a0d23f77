"""`python -m services.consent`: runs the consent service (exits 2 when the network file is missing or invalid)."""

import sys

from lotse_kit.network import NetworkConfigError
from lotse_kit.serve import run

from .bootstrap import bootstrap
from .config import ConsentSettings

if __name__ == "__main__":
    sys.exit(run("consent", ConsentSettings, bootstrap, config_errors=(NetworkConfigError,)))
