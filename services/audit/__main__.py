"""`python -m services.audit`: runs the audit service."""

import sys

from lotse_kit.network import NetworkConfigError
from lotse_kit.serve import run

from .adapters.keys import SigningKeyError
from .bootstrap import bootstrap
from .config import AuditSettings

if __name__ == "__main__":
    sys.exit(run("audit", AuditSettings, lambda settings: bootstrap(settings), config_errors=(NetworkConfigError, SigningKeyError)))
