"""``python -m massiveds.cli``: the ``massiveds`` command."""

from massiveds.cli import main

main()
