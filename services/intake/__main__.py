"""`python -m services.intake`: runs the intake service (exit 2 with line and field for an invalid network file)."""

import sys

from lotse_kit.network import NetworkConfigError
from lotse_kit.serve import run

from .bootstrap import bootstrap
from .config import IntakeSettings

if __name__ == "__main__":
    sys.exit(run("intake", IntakeSettings, bootstrap, config_errors=(NetworkConfigError,)))
