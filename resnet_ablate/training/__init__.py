"""Training: the config and its parsing, data, the run folder, one run's state and writer, the step (eager or
CUDA graph) and the loop that drives packed runs."""
