"""Reads a file through OpenCascade (C++, below Python's audit hooks)."""

import cadquery as cq

path = "/etc/passwd"

result = cq.importers.importStep(path)
