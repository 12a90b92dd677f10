"""The demo: a fresh embedded hub with the designs library, the French fab labs and simulated
agents, and makers ordering parts near them (``dgml demo``, ``dgml up --demo``)."""
