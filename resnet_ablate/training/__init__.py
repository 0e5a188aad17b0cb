"""Training: the config and its parsing, data and its buffered sampling, the run folder, one run's state and
writer, the step (eager or CUDA graph; runs alone, on streams or as one wide net; compiled or not) and the loop
that drives packed runs."""
