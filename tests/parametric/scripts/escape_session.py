"""Forks a child that leaves the process group and sleeps, hoping to outlive the build."""

import os
import time

seconds = 600

if os.fork() == 0:
    os.setsid()
    time.sleep(seconds)
    os._exit(0)
raise RuntimeError("left a process behind")
