"""Reads a file named by a parameter and tries to smuggle it out: printed (into the log),
copied into the working dir and into the part's own file name."""

import os

path = "/etc/passwd"

with open(path) as source:
    text = source.read()
print(text)
with open("leak.txt", "w") as copy:
    copy.write(text)
os.makedirs("out", exist_ok=True)
with open("out/part.stl", "w") as copy:
    copy.write(text)
result = None
