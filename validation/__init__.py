"""Validation of compactsim against what real kernels were measured to do.

`python -m validation` (or `make validate`) runs every check of `validation.checks`: each
reproduces a published measurement of Linux memory-management work (LKML cover letters,
papers, production reports) or a real capture kept in `validation/data/`, with the
compactsim experiment that corresponds, several seeds per arm, and a tolerance on the
shape of the result (direction and rough magnitude). It writes `docs/validation.md`:
every check, pass or depart, and for a departure what the model's own figures show.

Modules: `model` (the shape of a check), `measure` (the figures taken from one run),
`runner` (runs the experiments, two worker processes), `stats` (per-seed values and
their spread), `captures` (the real captures), `checks` (the registry), `report`
(the document).
"""
