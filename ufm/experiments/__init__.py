"""Reproducible experiments shipped with the package (the default job of ``ufm run``)."""
