"""An endless loop: the time cap stops it."""

count = 0
while True:
    count += 1
