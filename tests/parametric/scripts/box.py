"""A parametric box: the two parameters change its volume."""

# ruff: noqa: F821 (show_object and cq are given by the build, as in CQGI)

import cadquery as cq

width = 20.0
height = 10

box = cq.Workplane("XY").box(width, 15.0, height)
show_object(box, name="box")
