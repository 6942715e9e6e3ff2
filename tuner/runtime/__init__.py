"""Running a sweep here: the runner, its run location and storage, Ray start-up, progress."""
