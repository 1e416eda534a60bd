"""`python -m client ...` is the `gft` command (works from any checkout, installed or not)."""
import sys

from client.cli import main

sys.exit(main())
