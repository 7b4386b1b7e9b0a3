"""reprokit: the thin toolkit shared by the paper reproductions in this monorepo."""

__version__ = "0.1.0"
