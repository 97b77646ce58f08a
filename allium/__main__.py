from allium.cli import run

run()
