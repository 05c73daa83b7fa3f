"""``python -m compression <command>``: see :mod:`compression.cli`."""
from .cli import main

raise SystemExit(main())
