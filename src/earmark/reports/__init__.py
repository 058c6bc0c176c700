"""Reports: markdown, HTML and plots for runs, comparisons, cross-validation and tuning."""
