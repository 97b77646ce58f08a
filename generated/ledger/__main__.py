"""Written by allium: `python -m ledger` runs unit `main`'s command line."""
from ledger.main import main

raise SystemExit(main())
