"""Parametric designs: CadQuery scripts with declared parameters, built in a sandbox.

- ``params``: the parameters a script declares (read with ``ast``, never run), checked values,
  the canonical parameter hash, and the substitution of values into the syntax tree.
- ``build``: ``build_design`` (values checked, script run in the sandbox, files collected into
  a ``BuildResult``) and ``load_folder``.
- ``sandbox`` (the parent's side: limits, namespaces, the wall clock) and ``child`` (the
  process that runs the script: privileges, ``landlock``, the audit hook in ``guard``, and the
  export of parts in ``export``).

``docs/parametric.md`` describes the contract and what each sandbox layer defends against.
"""
