"""Verifiers score traces per step; a reduction turns step scores into one trace score."""
