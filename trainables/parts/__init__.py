"""The training loop's parts, one job each: steps, batches, evaluation, schedule, judge."""
