"""A CQGI-style script: no import, no show_object, only `result`."""

# ruff: noqa: F821 (show_object and cq are given by the build, as in CQGI)

side = 12
rounded = True

result = cq.Workplane().box(side, side, side)
if rounded:
    result = result.edges().fillet(1.0)
