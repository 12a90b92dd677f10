"""dgml: design global, manufacture local.

The thin shell around the domain packages: settings, the database engine, the app factory that
mounts the routes of ``registry`` (and later ``router``), the embedded stack and the command line.
"""

__version__ = "0.1.0"
