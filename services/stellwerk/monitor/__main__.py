"""Entry point of the monitor process."""

import sys

from stellwerk.core.entrypoint import main
from stellwerk.monitor import Monitor

sys.exit(main("monitor", lambda settings, listen: Monitor(settings, listen=listen)))
