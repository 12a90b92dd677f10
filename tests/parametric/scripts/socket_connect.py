"""Opens a TCP connection to a port on this machine and sends a greeting."""

import socket

port = 9

connection = socket.create_connection(("127.0.0.1", port), timeout=2)
connection.sendall(b"hello from the sandbox")
connection.close()
result = None
