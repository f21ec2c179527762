"""Analysis tools over finished runs: baselines, RESULTS.md, metric tables, pipeline records, smoke checks, tuning logs."""
