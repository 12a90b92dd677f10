"""Tries to switch the audit hook off from inside, then reads /etc/passwd."""

import sys

path = "/etc/passwd"

attempts = []
guard = sys.modules.get("registry.parametric.guard")
try:
    guard._normal.__code__ = (lambda path, base: base + "/fine").__code__
except Exception as exc:
    attempts.append(f"code: {exc}")
frame = sys._getframe()
while frame is not None:
    if "hook" in frame.f_locals:
        hook = frame.f_locals["hook"]
        for cell in hook.__closure__ or ():
            cell.cell_contents = None
        attempts.append("found the hook")
    frame = frame.f_back
print(attempts)
with open(path) as source:
    print(source.read())
result = None
