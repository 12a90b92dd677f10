"""Parametric designs: CadQuery scripts with declared parameters, built in a sandbox.

- ``params``: the parameters a script declares (read with ``ast``, never run), checked values,
  the canonical parameter hash, and the substitution of values into the syntax tree.
- ``build``: ``build_design`` (values checked, script run in the sandbox, files collected into
  a ``BuildResult``) and ``load_folder``.
- ``sandbox`` (the parent's side: limits, namespaces, the wall clock) and ``child`` (the
  process that runs the script: privileges, ``landlock``, the audit hook in ``guard``, and the
  export of parts in ``export``).
- ``warm`` (the parent's side of the warm mode) and ``zygote`` (a pre-imported process that
  forks one process per build, ``spare``, which then puts up the same layers as a cold child),
  with ``warmup`` (the work done ahead so that builds do not do it first).

``docs/parametric.md`` describes the contract and what each sandbox layer defends against.
"""
