"""Writes a file outside its working dir."""

target = "/tmp/escape"

with open(target, "w") as out:
    out.write("escaped")
result = None
