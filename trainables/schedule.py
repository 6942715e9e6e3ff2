"""Learning-rate schedule: linear warmup, then constant."""


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Learning rate for optimisation step `step` (1-based).

    Rises linearly over the first `warmup_steps` steps, reaching base_lr at step
    `warmup_steps`, and stays there (nanoGPT's get_lr without the decay).
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return base_lr
    return base_lr * step / warmup_steps
