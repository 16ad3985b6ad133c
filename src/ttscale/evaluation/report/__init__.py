"""What a run shows a person: curves.png (``plots``) and the self-contained report.html
(``html``)."""
