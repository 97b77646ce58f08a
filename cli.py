"""Run allium from a checkout: `python cli.py check specs/` (same as `allium`)."""

from allium.cli import run

if __name__ == "__main__":
    run()
