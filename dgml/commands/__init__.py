"""Commands of the ``dgml`` command line, one module per noun."""
