"""The ``dockerfile.v0`` frontend: Dockerfiles to LLB with BuildKit v0.11's rules.

:mod:`.frontend` is the frontend the ``frontends`` registry loads (reading the Dockerfile and
``.dockerignore`` through the build's session, mapping the ``--opt`` options, solving one
graph per target platform); :mod:`.dockerignore` reads ignore files; the parser, instructions
and converter live in their own subpackages.
"""
