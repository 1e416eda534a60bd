"""python -m gft_core train|eval|make-tiny|make-toy-data (see gft_core.cli)."""

from gft_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
