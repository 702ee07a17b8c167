"""One module per stage of the release; the order lives in pipeline/plan.py."""
