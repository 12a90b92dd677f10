"""Several parts: two unnamed, one named twice, an assembly, and a text label."""

# ruff: noqa: F821 (show_object and cq are given by the build, as in CQGI)

import cadquery as cq

label = "dgml"
size = 10.0

show_object(cq.Workplane().box(size, size, size))
show_object(cq.Workplane().sphere(size / 2).val())
show_object(cq.Workplane().cylinder(size, size / 2), name="peg")
show_object(cq.Workplane().cylinder(size, size / 4), name="peg")
assembly = cq.Assembly()
assembly.add(cq.Workplane().box(size, size, 2), name="base")
assembly.add(cq.Workplane().box(2, 2, size), name="post", loc=cq.Location((0, 0, size)))
show_object(assembly, name="stand/../../x")
show_object(cq.Workplane().text(label, size, 2.0), name="label")
