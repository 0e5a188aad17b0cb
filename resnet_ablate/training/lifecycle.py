"""The life of one run in the training loop, a `TrainingRun`: start (a finished run is left alone, an
unfinished one resumes from its checkpoint, a new one starts its folder), then at each evaluation measure and
settle (checkpoint, pause on a stop), and finish with result.json: done, or fail for a run that diverges or
ends above `fail_threshold` (at chance, after a reduced schedule: `failrule.py`). Its state word is
`folders/states.py`'s: running while it trains, then paused, done or fail."""
from __future__ import annotations

import math

import torch

from ..folders.runfolder import CHECKPOINT
from ..folders.states import State
from . import checkpoint, datasets
from .config import Config, defaults
from .configfile import run_dir, run_name
from .evaluate import evaluate, probe, responses
from .failrule import fail_rule, failure
from .optim import lr_at
from .progress import run_lines, say
from .runtime import device_name
from .state import RunState, build_state, precision_policy
from .writer import RunWriter, file_sha256, finite


class TrainingRun:
    """One run in the loop: its config, its state (built when it trains), its writer and its state word."""

    def __init__(self, cfg: Config, data: datasets.Data, device: torch.device, precision: str) -> None:
        self.cfg, self.data, self.device, self.precision = cfg, data, device, precision
        inputs = {"data_fingerprint": data.fingerprint, "data_official": data.official,
                  "init_sha256": file_sha256(cfg.init)}
        self.writer = RunWriter(cfg, run_dir(cfg), run_name(cfg), inputs)
        self.status = State.RUNNING
        self.state: RunState | None = None
        self.stop_reason = ""  # what paused it: a signal's name or time_limit_s=N
        self.step_facts: dict = {}  # how it stepped (pack mode, runs packed, compile), for result.json

    def start(self) -> None:
        """Resume or create the run folder, holding its lock while training; a finished run of the same
        settings and inputs is left alone, a folder of other ones refused."""
        if self._already_finished():
            return
        self.writer.claim()
        if self._already_finished():  # finished by another trainer just before this one took the lock
            return
        try:
            self.state = build_state(self.cfg, self.device, self.precision, self.data)
            for line in run_lines(self.writer.name, self.writer.dir, self.state.parameters, self.cfg):
                say(line)
            saved = self.writer.resume()
            if saved is not None:
                checkpoint.restore(self.state, saved, self.writer.dir / CHECKPOINT)
            self.writer.start_from(saved)
        except BaseException:
            self.writer.release()
            raise

    def _already_finished(self) -> bool:
        """Whether the folder holds this run finished (then said, the lock given back)."""
        found = self.writer.existing_result()
        if found is None:
            return False
        self.writer.release()
        self.status, self.writer.result = State(found["status"]), found
        say(f"[{self.writer.name}] already finished ({found['status']}) in {self.writer.dir}; nothing to do")
        return True

    @property
    def name(self) -> str:
        return self.writer.name

    @property
    def iteration(self) -> int:
        return self.state.iteration

    @property
    def lr(self) -> float:
        """The lr the run trains at now."""
        return self.state.lrs.value

    @property
    def elapsed(self) -> float:
        """The run's training clock (seconds, its earlier processes' included)."""
        return self.writer.elapsed

    def at_boundary(self) -> bool:
        it = self.state.iteration
        return it % self.cfg.eval_every == 0 or it == self.cfg.iterations

    def wants_probe(self) -> bool:
        every, it = self.cfg.grad_probe_every, self.state.iteration
        return it in self.cfg.grad_probe_at or (every > 0 and it % every == 0)

    def measure(self, seconds: float) -> None:
        """At an interval's end: probe if due, count the interval's time, evaluate and log at a boundary."""
        if self.wants_probe():
            self.writer.log_probe(self.state.iteration, probe(self.state))
        self.writer.add_time(seconds)
        if self.at_boundary():
            self.log_interval()

    def log_interval(self) -> None:
        """Evaluate, write the metrics line; a non-finite training loss ends the run as fail."""
        train_loss, train_err, images = self.state.read_meters()
        test_loss, test_err = evaluate(self.state, self.data.test)
        it = self.state.iteration
        row = {"iteration": it, "epoch": it * self.cfg.batch_size / len(self.data.train),
               "lr": lr_at(self.cfg, it - 1), "train_loss": finite(train_loss), "train_error": train_err,
               "test_loss": finite(test_loss), "test_error": test_err}
        if self.data.val is not None:
            val_loss, val_err = evaluate(self.state, self.data.val)
            row.update(val_loss=finite(val_loss), val_error=val_err)
        self.writer.log_metrics(row, images)
        if not math.isfinite(train_loss):
            lo = it - images // self.cfg.batch_size + 1
            self.finish(State.FAIL, f"diverged: training loss is {train_loss} in iterations {lo}..{it}",
                        record_responses=False)

    def settle(self, stop_reason: str | None) -> None:
        """After measuring: finish at the last iteration, checkpoint at a boundary or a stop, pause on a stop."""
        if self.status is State.RUNNING and self.state.iteration == self.cfg.iterations:
            self.finish(State.DONE)
        if self.status is State.RUNNING and (self.at_boundary() or stop_reason):
            self.writer.write_checkpoint(self.state)
        if self.status is State.RUNNING and stop_reason:
            self.status, self.stop_reason = State.PAUSED, stop_reason
            self.writer.release()
            say(f"[{self.writer.name}] stopped at iteration {self.state.iteration} ({stop_reason}); checkpoint "
                f"saved, run the same command again to resume")

    def finish(self, status: State, reason: str = "", record_responses: bool = True) -> None:
        """Write responses.json (the final net's layer responses; not for a diverged one, whose numbers mean
        nothing) and result.json: done, or fail with the reason (`failrule.py`: the rule recorded as `fail_rule`)."""
        last = self.writer.last_row
        final = last.get("test_error")
        rule = fail_rule(vars(self.cfg), defaults().iterations)
        if status is State.DONE and final is not None:
            reason = failure(rule, final, self.cfg.fail_threshold, self.data.num_classes)
            status = State.FAIL if reason else status
        self.status = status
        if record_responses:
            self.writer.write_responses(responses(self.state, "end"))
        self.writer.write_result({
            "status": status.value, "reason": reason, "fail_rule": rule, "name": self.writer.name,
            "final_test_error": final,
            "final_test_loss": last.get("test_loss"), "best_test_error": finite(self.writer.best),
            "final_train_error": last.get("train_error"), "final_train_loss": last.get("train_loss"),
            "final_val_error": last.get("val_error"),
            "iterations": self.state.iteration, "wall_time_s": round(self.writer.elapsed, 2),
            "parameters": self.state.parameters, "seed": self.cfg.seed, "precision": self.precision,
            "precision_policy": precision_policy(self.precision, self.cfg.residual_fp32), **self.step_facts,
            "torch": torch.__version__, "device": device_name(self.device), "threads": torch.get_num_threads(),
            "git_commit": self.writer.commit,
            **({"capture_s": round(self.writer.capture_s, 2)} if self.writer.capture_s is not None else {}),
        })
        self.writer.release()

    def summary(self) -> dict:
        """result.json's contents for a finished run; status, iteration and what stopped it for a paused one."""
        if self.writer.result is not None:
            return self.writer.result
        return {"status": State.PAUSED.value, "iteration": self.state.iteration, "reason": self.stop_reason}
