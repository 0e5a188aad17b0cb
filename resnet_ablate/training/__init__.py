"""Training: the config and its parsing, data and its buffered sampling, one run's state (`state.build_state`)
and its checkpoint, the process's set-up (`runtime`) and stop requests (`signals`), the writer of a run folder, the
step (eager or CUDA graph; runs alone, on streams or as one wide net; compiled or not), a run's life
(`lifecycle`) and the loop that drives packed runs (`trainer`)."""
