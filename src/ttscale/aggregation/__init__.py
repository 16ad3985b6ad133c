"""How answers combine and when to stop sampling: the algorithms over votes and scores.

- ``stopping``: adaptive-N stopping rules over a tally of votes (Bayes factor, budgeted, fixed)
- ``confidence``: DeepConf trace confidence from token log-probabilities, confident voting
- ``brevity``: a vote that weighs shorter samples more
- ``pruning``: DeepPrune prefix similarity and greedy clustering
- ``ensemble``: weights for combining several sources' votes (equal, MILP, second order)

They import only the core types, so strategies, replay and the planner share them.

Example:
    >>> from ttscale.aggregation.stopping import parse_rule
    >>> parse_rule("fixed", n_max=16).n_max
    16
"""
