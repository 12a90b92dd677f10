"""Starts a program that leaves a marker file."""

import subprocess

marker = "/tmp/marker"

subprocess.run(["/usr/bin/touch", marker], check=True)
result = None
