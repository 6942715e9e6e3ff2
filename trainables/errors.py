"""What a trial reports as its own error."""


class TrialInputError(ValueError):
    """A trial that cannot run as configured (reported as the trial's error)."""
