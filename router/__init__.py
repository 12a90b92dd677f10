"""The router: fablab directory, geo index, placement of fabrication jobs, orders and offers.

The placement core is pure logic over plain data plus the Redis geo index, and never touches the
database: :mod:`router.terms` (licence terms for fabrication), :mod:`router.geo` (the index,
distances, coarse locations), :mod:`router.records` (fablab records and order requests),
:mod:`router.part` (build-volume fit), :mod:`router.decision` (what a placement answers) and
:mod:`router.placement` (the policy and ``place``). docs/router.md explains the decisions.
"""
