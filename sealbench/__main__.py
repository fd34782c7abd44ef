"""`python -m sealbench`: the same commands as the `sealbench` script."""
from .cli import main

raise SystemExit(main())
