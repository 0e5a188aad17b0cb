"""The run-folder and sweep-folder formats, for every tool that reads or writes them (trainer, launcher, status,
report): the words for where a run stands (`states`), the run folder's files (`runfolder`), its lock (`lock`),
the sweep folder (`sweepfolder`) and what became of a sweep's jobs (`jobstate`).

Nothing here imports torch, the models or the trainer, so `python -m resnet_ablate.status` answers at once; the
checkpoint, the one file that needs torch, is `training/checkpoint.py`'s."""
