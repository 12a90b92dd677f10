"""Writes outside the working dir through OpenCascade (C++, below Python's audit hooks)."""

import cadquery as cq

target = "/tmp/escape.stl"

box = cq.Workplane().box(5, 5, 5).val()
box.exportStl(target)
result = box
