"""The zygote's warm-up and a spare's rehearsal: work done ahead, so no build does it first.

A build forked by the zygote (``zygote.py``) starts from the zygote's memory. Whatever CadQuery,
OCP and OpenCascade set up lazily on first use (dispatch caches, algorithm tables, the mesher,
the STEP writer's session) is paid by every build the zygote has not done it for; in the same
process, a second build would find it done. So the zygote runs, once, a part built with the
operations designs commonly use (sketches of lines, arcs and splines, extrude, revolve, shell,
holes, counterbores, fillets, chamfers, mirror, rotations, unions and cuts) and exports it as
the builds do (``export.write_parts``).

A spare (a process the zygote forked for the next build) then rehearses, while it waits, the
steps of a build on a tiny fixed script (``rehearse``): parsing, substituting values,
compiling, making the audit hook (not installing it), running the script, exporting its part
and writing a result. The pages those steps write are copied from the zygote then, off the
build's path. Nothing of it is left for the build but freed memory and warm caches.

Decisions:

- Booleans run with ``parallel=False`` here: a parallel boolean starts OpenCascade's thread
  pool, and the zygote must never have a second thread when it forks. (A build's own booleans
  are parallel as before; its pool starts in the build's process.)
- Only fixed, trusted code runs: the zygote never runs a script, and a spare rehearses before
  it has been given any build.
- A warm-up that fails is reported in the zygote's log and otherwise ignored: it only saves
  time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

REHEARSAL = "import cadquery as cq\n\nside = 1.0\nshow_object(cq.Workplane().box(side, 1, 1))\n"


@contextlib.contextmanager
def serial_booleans():
    """CadQuery's booleans with ``parallel=False`` for a while: no thread pool starts."""
    from cadquery.occ_impl.shapes import Shape

    original = Shape._bool_op

    def serial(self, args, tools, op, parallel=True):
        return original(self, args, tools, op, parallel=False)

    Shape._bool_op = serial
    try:
        yield
    finally:
        Shape._bool_op = original


@serial_booleans()
def warm_up(directory: str = "warm-up") -> float:
    """Build and export the warm-up parts in ``directory`` (removed afterwards); the seconds
    it took."""
    started = time.monotonic()
    from cadquery import Workplane

    from registry.parametric import export

    here = os.getcwd()
    os.makedirs(directory, exist_ok=True)
    os.chdir(directory)
    try:
        part = (
            Workplane("XY")
            .box(20, 12, 5)
            .faces(">Z")
            .workplane()
            .pushPoints([(-5, 0), (5, 0)])
            .hole(2)
            .edges("|Z")
            .fillet(1.0)
            .faces(">Z")
            .edges()
            .chamfer(0.3)
        )
        part = part.union(Workplane("XY").circle(3).extrude(8))
        part = part.cut(Workplane("XZ").rect(2, 2).extrude(10, both=True))
        ring = Workplane("XZ").polyline([(0, 0), (4, 0), (4, 2), (0, 3)]).close()
        part = part.union(ring.revolve(360, (0, 0, 0), (0, 1, 0)).translate((12, 0, 0)))
        tab = Workplane("XY").lineTo(5, 0).threePointArc((6, 1), (5, 2)).close().extrude(1)
        part = part.union(tab.mirror("YZ")).faces("<Z").workplane().cboreHole(1.5, 3, 0.5)
        curve = Workplane("XY").spline([(0, 0), (2, 1), (4, 0)]).lineTo(4, -1).close()
        part = part.union(curve.extrude(1).rotate((0, 0, 0), (0, 0, 1), 30))
        shell = Workplane("XY").box(6, 6, 6).faces(">Z").shell(-0.5)
        export.write_parts([("part", part), ("shell", shell)], False, [], [])
    except Exception:
        print("the warm-up failed (builds only lose time):", file=sys.stderr)
        traceback.print_exc()
    finally:
        os.chdir(here)
        shutil.rmtree(directory, ignore_errors=True)
    return time.monotonic() - started


@serial_booleans()
def rehearse() -> None:
    """The steps of a build, on ``REHEARSAL`` in a private temporary dir (removed)."""
    from registry.parametric import child, export, guard
    from registry.parametric.params import parse_script, substitute

    here = os.getcwd()
    directory = tempfile.mkdtemp(prefix="rehearsal-", dir=here)
    try:
        os.chdir(directory)
        tree = parse_script(REHEARSAL, "design.py")
        code = compile(substitute(tree, {"side": 2.0}), "design.py", "exec")
        guard.make_hook(directory, child.read_roots() + child.DEVICES, ("/dev/null",), [])
        shown, error, _ = child.run_script(code, "design.py", child.uses_cad(tree))
        result = {"parts": [], "notes": [], "error": error}
        export.write_parts(shown, False, result["parts"], result["notes"])
        with open(child.RESULT_FILE, "w") as file:
            json.dump(result, file)
    except Exception:
        traceback.print_exc()
    finally:
        os.chdir(here)
        shutil.rmtree(directory, ignore_errors=True)
