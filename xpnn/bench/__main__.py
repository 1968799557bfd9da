"""``python -m xpnn.bench``: the same as ``xpnn bench``."""
import sys

from . import main

sys.exit(main())
