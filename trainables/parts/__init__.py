"""The training loop's parts, one job each: forward pass, batches, evaluation, schedule, judge."""
