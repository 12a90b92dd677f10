"""``python -m dgml``: the same as the ``dgml`` command."""

from dgml.cli import main

main()
