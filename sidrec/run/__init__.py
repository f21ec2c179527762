"""Run plumbing: run summaries, launch checks, experiment tracking and the recipe skeleton (`sidrec.run.recipe`)."""
