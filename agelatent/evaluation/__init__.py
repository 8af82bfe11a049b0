"""Evaluation: metrics with bootstrap confidence intervals, reports for training runs and editor comparisons."""
