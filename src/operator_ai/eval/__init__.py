"""`operator eval`: scenarios as data, trials measured from the fault, runs and campaigns,
their statistics, and the HTML report."""
