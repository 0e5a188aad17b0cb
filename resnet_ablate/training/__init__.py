"""Training: the config and its parsing, data, one run's state (`state.build_state`) and its checkpoint, the
process's set-up (`runtime`) and stop requests (`signals`), the writer of a run folder, the step (eager or CUDA
graph), a run's life (`lifecycle`) and the loop that drives packed runs (`trainer`)."""
