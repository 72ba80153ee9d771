"""The ``git://`` source: a repository checked out at a branch, tag or commit."""
