"""`python -m services.gateway`: runs the gateway (an invalid network file or webhook secret exits 2)."""

import sys

from lotse_kit.network import NetworkConfigError
from lotse_kit.serve import run
from lotse_kit.webhooks import InvalidSecret

from .bootstrap import bootstrap
from .config import GatewaySettings

if __name__ == "__main__":
    sys.exit(
        run("gateway", GatewaySettings, lambda settings: bootstrap(settings=settings), config_errors=(NetworkConfigError, InvalidSecret))
    )
