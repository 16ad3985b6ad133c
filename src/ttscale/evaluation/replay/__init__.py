"""Strategies replayed on stored samples, no model needed: pass@k and subset votes with
curves and intervals (``metrics``), adaptive stopping (``adaptive``), DeepConf
(``confidence``), DeepPrune (``prune``), ensembles of runs (``ensembles``) and every
verifier of a run compared on the same samples (``verifiers``).
"""
