"""Geometry reports: reading model files, checking them as meshes, and judging whether a fablab
can make them. Pure functions over numpy arrays; nothing here touches the database or HTTP."""
