"""What a trial reports as its own error, and the inputs branching cannot use."""


class TrialInputError(ValueError):
    """A trial that cannot run as configured (reported as the trial's error)."""


class BranchInputError(ValueError):
    """Inputs `noisetune branch` cannot use (trainables.branching), one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
