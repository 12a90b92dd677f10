"""Prints what a build process inherited: descriptors, threads, name, namespaces, modules."""

import json
import os
import sys
import threading

with open("/proc/self/comm") as comm:
    name = comm.read().strip()
print(
    "INSPECT "
    + json.dumps(
        {
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "threads": threading.active_count(),
            "tasks": len(os.listdir("/proc/self/task")),
            "name": name,
            "net": os.readlink("/proc/self/ns/net"),
            "pid_ns": os.readlink("/proc/self/ns/pid"),
            "pid": os.getpid(),
            "cadquery": "cadquery" in sys.modules,
            "cwd": os.getcwd(),
            "home": os.environ.get("HOME"),
        }
    )
)
result = None
