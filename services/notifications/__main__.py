"""`python -m services.notifications`: runs the notifications service (an invalid network file or key configuration exits 2)."""

import sys

from lotse_kit.network import NetworkConfigError
from lotse_kit.serve import run

from .adapters.keys import KeyConfigError
from .bootstrap import bootstrap
from .config import NotificationsSettings

if __name__ == "__main__":
    sys.exit(
        run(
            "notifications",
            NotificationsSettings,
            lambda settings: bootstrap(settings=settings),
            config_errors=(NetworkConfigError, KeyConfigError),
        )
    )
