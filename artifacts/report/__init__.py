"""The static HTML report of runs (``medrun report``): ``data`` reads the runs, ``render`` writes the pages."""
