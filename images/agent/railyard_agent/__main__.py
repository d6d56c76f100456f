"""`python3 -m railyard_agent`: what /usr/lib/railyard/update-agent runs."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
