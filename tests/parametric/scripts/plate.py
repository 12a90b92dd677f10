"""A flat mounting plate for the laser: a rounded rectangle with four holes."""

# ruff: noqa: F821 (show_object and cq are given by the build, as in CQGI)

import cadquery as cq

length = 80.0
width = 50.0
thickness = 3.0
hole = 4.0
with_knob = False

plate = (
    cq.Workplane("XY")
    .rect(length, width)
    .extrude(thickness)
    .edges("|Z")
    .fillet(5.0)
    .faces(">Z")
    .workplane()
    .rect(length - 16, width - 16, forConstruction=True)
    .vertices()
    .hole(hole)
)
show_object(plate, name="plate")
if with_knob:
    # not a flat sheet: it gets STL and STEP but no DXF
    show_object(cq.Workplane("XY").sphere(5.0), name="knob")
