"""`python -m services.consent`: runs the consent service."""

import sys

from lotse_kit.serve import run

from .bootstrap import bootstrap
from .config import ConsentSettings

if __name__ == "__main__":
    sys.exit(run("consent", ConsentSettings, lambda settings: bootstrap(settings=settings)))
