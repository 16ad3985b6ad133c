"""``python -m ttscale``: the same command line as the ``ttscale`` script."""

from ttscale.cli.main import main

main()
