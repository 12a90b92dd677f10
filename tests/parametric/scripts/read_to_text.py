"""Reads a file named by a parameter and engraves its first line as a text part."""

# ruff: noqa: F821 (show_object and cq are given by the build, as in CQGI)

import cadquery as cq

path = "/etc/passwd"

with open(path) as source:
    first = source.readline().strip()[:24]
show_object(cq.Workplane("XY").text(first, 5.0, 1.0), name="label")
