"""The fablab job agent: claims offers over HTTPS, verifies and prepares files, drives machines."""
