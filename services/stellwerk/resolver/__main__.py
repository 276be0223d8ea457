"""Entry point of the resolver process."""

import sys

from stellwerk.core.entrypoint import main
from stellwerk.resolver import Resolver

sys.exit(main("resolver", lambda settings, listen: Resolver(settings, listen=listen)))
