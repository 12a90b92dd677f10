"""Asks for 20 GB at once: the memory cap refuses it."""

gigabytes = 20
hoard = bytearray(gigabytes * 1024**3)
result = None
