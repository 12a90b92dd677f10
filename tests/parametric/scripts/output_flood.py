"""Writes a file far larger than the output cap."""

megabytes = 64

with open("flood.bin", "wb") as flood:
    for _ in range(megabytes):
        flood.write(b"\0" * 2**20)
result = None
