"""``python -m mergelang`` runs the command line."""

from mergelang.cli import run

run()
