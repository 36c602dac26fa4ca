"""Training loop: one process or many (``paddle.distributed.launch``), exact resume, safe snapshots.

Reproducibility: the data order/augmentation is a function of (seed, epoch, index) (see the reader) and
Paddle's RNG (RoI sampling) is re-seeded from (seed, global iteration, rank) at every iteration, so a
run resumed from a snapshot continues with exactly the losses of an uninterrupted run.

Faults: snapshots are all-or-nothing directories (``train_state``); the images are checked before the
first step; NaN/inf losses stop training before ``backward`` and NaN/inf box deltas stop it before they
reach a fused kernel that would abort the process (``finite_guard``); Ctrl-C saves a resumable snapshot.
"""
import collections
import datetime
import logging
import math
import os
import time

import numpy as np
import paddle

from ..core import create
from ..data.loader import build_reader
from ..errors import NonFiniteLossError, TrainingInterrupted
from ..utils.progress import progress_interval
from . import distributed
from .finite_guard import FiniteGuard, NonFiniteValues, any_rank
from .model_builder import build_model, load_model_weights, select_device
from .train_state import (cleanup_stale_files, copy_snapshot, latest_complete_snapshot, load_snapshot,
                          publish_weights, save_snapshot)

__all__ = ["Trainer", "NonFiniteLossError", "TrainingInterrupted"]

logger = logging.getLogger(__name__)

# Layers whose shape depends on num_classes: a fine-tuning checkpoint with another class count skips them.
CLASS_DEPENDENT = ("bbox_score_stage", "conv_logits")


class SmoothedValue(object):
    """Median of the last ``window`` values (what the log shows) and the global average."""

    def __init__(self, window=20):
        self.values = collections.deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, v):
        self.values.append(v)
        self.total += v
        self.count += 1

    @property
    def median(self):
        return float(np.median(self.values)) if self.values else 0.0


class Trainer(object):
    """Builds model, reader, optimizer and schedule from a config and runs ``train()``.

    Options: ``eval_each_snapshot`` (``--eval``: COCO eval after each snapshot, keep ``best_model``),
    ``resume`` (snapshot prefix), ``amp``, ``seed``, ``max_iters`` (stop early with a resumable snapshot),
    ``use_vdl`` / ``vdl_log_dir`` (VisualDL scalars), ``output_dir`` (default ``save_dir/filename``).
    """

    def __init__(self, cfg, eval_each_snapshot=False, resume=None, amp=False, seed=0, max_iters=None,
                 use_vdl=False, vdl_log_dir=None, output_dir=None, device=None, progress=True):
        self.cfg = cfg
        self.eval_each_snapshot = eval_each_snapshot
        self.seed = int(seed)
        self.max_iters = max_iters if max_iters is not None else cfg.get("max_iters")
        self.progress = progress
        self.rank, self.world_size = distributed.init()
        self.device = select_device(cfg, device)
        self.output_dir = output_dir or os.path.join(cfg.get("save_dir", "output"), cfg.get("filename", "model"))
        self.log_iter = int(cfg.get("log_iter", 20))
        self.snapshot_epoch = int(cfg.get("snapshot_epoch", 1))
        self.epochs = int(cfg.get("epoch", 12))

        paddle.seed(self.seed)
        distributed.convert_sync_bn_if_needed(cfg, self.world_size, self.device)
        self.model = build_model(cfg)
        self.reader = build_reader(cfg, "train", seed=self.seed, rank=self.rank, world_size=self.world_size)
        check_files = getattr(self.reader.dataset, "check_files", None)
        if check_files is not None:  # a missing image fails now, not in the middle of an epoch
            check_files()
        self.steps_per_epoch = len(self.reader)
        total_bs = self.reader.batch_size * self.world_size
        lr_cfg = create("LearningRate", cfg)
        self.scheduler = lr_cfg(self.steps_per_epoch, total_bs)
        if lr_cfg.auto_scale:
            logger.info("LearningRate.auto_scale: base_lr %.5g x %d images per step / %d = %.5g", lr_cfg.base_lr,
                        total_bs, lr_cfg.base_batch_size, self.scheduler.base_lr)
        else:
            logger.info("base_lr %.5g for %d images per step (%d per process x %d processes); "
                        "set LearningRate.auto_scale: true to scale it linearly", self.scheduler.base_lr,
                        total_bs, self.reader.batch_size, self.world_size)
        self.optimizer = create("OptimizerBuilder", cfg)(self.scheduler, self.model)

        self.start_epoch, self.start_iter, self.global_iter, self.best_ap = 0, 0, 0, -1.0
        self.resumed_from = None
        if resume:
            prog = load_snapshot(resume, self.model, self.optimizer)
            self.resumed_from = resume
            self.start_epoch = int(prog.get("epoch", 0))
            self.start_iter = int(prog.get("iter_in_epoch", 0))
            self.global_iter = int(prog.get("global_iter", self.start_epoch * self.steps_per_epoch))
            self.best_ap = float(prog.get("best_ap", -1.0))
            if int(prog.get("steps_per_epoch", self.steps_per_epoch)) != self.steps_per_epoch:
                logger.warning("resuming with %d steps per epoch (snapshot had %s): the schedule shifts",
                               self.steps_per_epoch, prog.get("steps_per_epoch"))
        elif cfg.get("pretrain_weights"):
            self._load_pretrain(cfg["pretrain_weights"])

        self.amp = bool(amp)
        self.scaler = None
        if self.amp:
            if self.device == "cpu":
                logger.warning("--amp needs a GPU; training in float32 on the CPU")
                self.amp = False
            else:
                self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
        self.train_model = distributed.wrap(self.model, self.world_size, cfg)
        self.vdl = distributed.vdl_writer(use_vdl, vdl_log_dir, self.rank)
        self.last_snapshot = None
        if self.rank == 0:
            cleanup_stale_files(self.output_dir)  # what a crash during a save left behind

    # ------------------------------------------------------------------------------------ weights

    def _load_pretrain(self, spec):
        report = load_model_weights(self.model, spec, pretrain=True, progress=self.progress)
        reinit = [k for k, *_ in report.get("shape", []) if any(c in k for c in CLASS_DEPENDENT)]
        if reinit:
            logger.info("fine-tuning: %d class-dependent tensors have another shape in %s and keep their new "
                        "initialisation: %s", len(reinit), spec, ", ".join(reinit))
        return report

    # ------------------------------------------------------------------------------------ snapshots

    def _progress(self, epoch, iter_in_epoch):
        return {"epoch": epoch, "iter_in_epoch": iter_in_epoch, "global_iter": self.global_iter,
                "best_ap": self.best_ap, "steps_per_epoch": self.steps_per_epoch, "seed": self.seed}

    def save(self, name, epoch, iter_in_epoch, same_as=None):
        """Rank 0 writes the snapshot directory ``<output_dir>/<name>`` (all or nothing); returns its path.

        ``same_as``: a snapshot just written with the same state, published again under ``name`` (hard links).
        """
        directory = os.path.join(self.output_dir, name)
        distributed.broadcast_buffers(self.model, self.world_size)
        if self.rank == 0:
            if same_as is not None:
                copy_snapshot(same_as, directory)
            else:
                save_snapshot(directory, self.model, self.optimizer, self._progress(epoch, iter_in_epoch))
            logger.info("saved snapshot %s", directory)
        distributed.barrier(self.world_size)
        self.last_snapshot = directory
        return directory

    def _last_good_snapshot(self):
        """The snapshot a user can go back to: this run's last, else the newest complete one on disk."""
        if self.last_snapshot:
            return self.last_snapshot
        found = latest_complete_snapshot(self.output_dir)
        if found is not None:
            return found[0]
        return self.resumed_from

    # ------------------------------------------------------------------------------------ loop

    def _iteration_seed(self):
        return (self.seed * 1000003 + self.global_iter * 7919 + self.rank * 104729) % (2 ** 31 - 1)

    def _check_finite(self, losses, epoch, it):
        """Loss values as floats; NaN/inf on any rank stops training (before ``backward`` touches the weights)."""
        values = {k: float(v) for k, v in losses.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if any_rank(bool(bad), self.world_size):
            what = ", ".join("{}={}".format(k, v) for k, v in bad.items()) or "in another process"
            raise self._non_finite_error("non-finite loss at epoch {} iteration {} (global iteration {}): {}".format(
                epoch, it, self.global_iter, what))
        return values

    def _non_finite_error(self, what):
        """The stop message: what happened, the last good snapshot, and a remedy that fits the config."""
        snapshot = self._last_good_snapshot()
        lr = self.scheduler.base_lr if hasattr(self.scheduler, "base_lr") else self.optimizer.get_lr()
        clip = getattr(self.optimizer, "_grad_clip", None)
        if clip is None:
            remedy = ("lower the learning rate (LearningRate.base_lr is {:g}) or enable gradient clipping "
                      "(e.g. -o OptimizerBuilder.clip_grad_by_norm=35)".format(lr))
        else:
            remedy = ("gradient clipping is already on ({}), so lower the learning rate (LearningRate.base_lr is {:g}) "
                      "or check the images and annotations of this iteration".format(type(clip).__name__, lr))
        return NonFiniteLossError("{}. Training stopped; the last good snapshot is {}. To continue, {}{}.".format(
            what, snapshot or "none (nothing was saved yet)", remedy,
            " and resume with -r {}".format(snapshot) if snapshot else ""))

    def train(self):
        """Run the schedule; returns the list of loss dicts (one per iteration, this rank's values).

        Stops early (with a resumable ``last`` snapshot) at ``max_iters`` or on Ctrl-C; a second Ctrl-C
        aborts at once. Ctrl-C is acted on between iterations, so the snapshot is always consistent.
        """
        self._stop_requested = False
        os.makedirs(self.output_dir, exist_ok=True)
        guard = FiniteGuard(self.model, self.world_size)
        history = []
        total_iters = self.epochs * self.steps_per_epoch
        if self.max_iters is not None:
            total_iters = min(total_iters, int(self.max_iters))
        meters = collections.defaultdict(SmoothedValue)
        t_start = time.time()
        # A line every log_iter iterations, and at least every $PPDET_HTC_PROGRESS_INTERVAL (default 60) s
        # so that slow iterations (a large model on a CPU) still show progress and an ETA.
        self._log_seconds = progress_interval(default=60.0)
        self._last_log = t_start
        iters_this_run = 0
        self.train_model.train()
        previous_handler = _install_sigint(self)
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self.reader.set_epoch(epoch)
                first = self.start_iter if epoch == self.start_epoch else 0
                t_data = time.time()
                for it, batch in enumerate(self.reader.iter_from(first), start=first):
                    if self._stop_requested or self.global_iter >= total_iters:
                        return self._stop(history, epoch, it)
                    data_time = time.time() - t_data
                    paddle.seed(self._iteration_seed())
                    guard.reset()
                    try:
                        values = self._step(batch, epoch, it)
                    except NonFiniteValues as e:
                        raise self._non_finite_error(
                            "non-finite values (NaN/inf) in {} at epoch {} iteration {} (global iteration {}), "
                            "before the losses: the weights have diverged".format(e.where, epoch, it, self.global_iter)
                        ) from None
                    history.append(values)
                    for k, v in values.items():
                        meters[k].update(v)
                    meters["data_time"].update(data_time)
                    self.global_iter += 1
                    iters_this_run += 1
                    if (self.global_iter % self.log_iter == 0 or self.global_iter == total_iters
                            or time.time() - self._last_log >= self._log_seconds):
                        self._log(epoch, it, meters, t_start, iters_this_run, total_iters)
                    t_data = time.time()
                self._end_of_epoch(epoch)
                if self._stop_requested or (self.global_iter >= total_iters and epoch + 1 < self.epochs):
                    return self._stop(history, epoch + 1, 0)
            return history
        finally:
            guard.remove()
            _restore_sigint(previous_handler)
            if self.vdl is not None:
                self.vdl.close()

    def _stop(self, history, epoch, it):
        directory = self.save("last", epoch, it)
        if self._stop_requested:
            raise TrainingInterrupted(
                "training interrupted (Ctrl-C) at global iteration {}; the resumable snapshot is {}: continue with "
                "-r {}".format(self.global_iter, directory, directory), snapshot=directory)
        logger.warning("reached max_iters at global iteration %d; resume with -r %s", self.global_iter, directory)
        return history

    def _step(self, batch, epoch, it):
        """One optimisation step; returns the loss values (checked for NaN/inf before ``backward``)."""
        if self.amp:
            with paddle.amp.auto_cast(level="O1"):
                losses = self.train_model(batch)
            values = self._check_finite(losses, epoch, it)
            scaled = self.scaler.scale(losses["loss"])
            scaled.backward()
            self.scaler.minimize(self.optimizer, scaled)
        else:
            losses = self.train_model(batch)
            values = self._check_finite(losses, epoch, it)
            losses["loss"].backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.scheduler.step()
        return values

    def _end_of_epoch(self, epoch):
        last = epoch + 1 == self.epochs
        if not last and (epoch + 1) % self.snapshot_epoch != 0:
            return
        saved = self.save("model_final" if last else str(epoch), epoch + 1, 0)
        if last and self.rank == 0:
            publish_weights(saved, saved + ".pdparams")
        self.save("last", epoch + 1, 0, same_as=saved)  # `last` is always the newest snapshot (hard links)
        if self.eval_each_snapshot:
            self._evaluate(epoch)

    def _evaluate(self, epoch):
        from .evaluator import evaluate

        out = os.path.join(self.output_dir, "eval_epoch{}".format(epoch))
        distributed.broadcast_buffers(self.model, self.world_size)  # every rank evaluates rank 0's model
        metrics = evaluate(self.cfg, model=self.model, output_eval=out, progress=self.progress, rank=self.rank,
                           world_size=self.world_size)
        if self.rank != 0:  # rank 0 scores and writes; the others wait for it (no collective timeout)
            distributed.barrier(self.world_size)
            return None
        ap = metrics["bbox"]["AP"]
        logger.info("eval after epoch %d (global iteration %d): bbox AP %.2f, mask AP %.2f", epoch,
                    self.global_iter, ap * 100, metrics.get("segm", {}).get("AP", float("nan")) * 100)
        if self.vdl is not None:
            for t in ("bbox", "segm"):
                self.vdl.add_scalar("eval/{}_AP".format(t), metrics[t]["AP"] * 100, self.global_iter)
        if ap >= self.best_ap:
            self.best_ap = ap
            directory = os.path.join(self.output_dir, "best_model")
            save_snapshot(directory, self.model, self.optimizer, self._progress(epoch + 1, 0))
            publish_weights(directory, directory + ".pdparams")
            logger.info("best bbox AP so far: %.2f (epoch %d) -> %s", ap * 100, epoch, directory)
        distributed.barrier(self.world_size)
        return metrics

    def _log(self, epoch, it, meters, t_start, iters_this_run, total_iters):
        self._last_log = time.time()
        elapsed = time.time() - t_start
        sec_per_iter = elapsed / max(iters_this_run, 1)
        eta = datetime.timedelta(seconds=int(sec_per_iter * max(total_iters - self.global_iter, 0)))
        ips = self.reader.batch_size * self.world_size / max(sec_per_iter, 1e-9)
        losses = " ".join("{}: {:.4f}".format(k, m.median) for k, m in meters.items() if k.startswith("loss"))
        lr = self.optimizer.get_lr()
        logger.info("epoch %d/%d iter %d/%d (global %d) lr %.6f %s | %.2f images/s data %.3fs eta %s",
                    epoch, self.epochs, it + 1, self.steps_per_epoch, self.global_iter, lr, losses, ips,
                    meters["data_time"].median, eta)
        if self.vdl is not None:
            for k, m in meters.items():
                if k.startswith("loss"):
                    self.vdl.add_scalar("train/" + k, m.median, self.global_iter)
            self.vdl.add_scalar("train/lr", lr, self.global_iter)


def _install_sigint(trainer):
    """First Ctrl-C: finish the current iteration, save, stop. Second Ctrl-C: abort immediately."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if trainer._stop_requested:
            snapshot = trainer._last_good_snapshot()
            raise TrainingInterrupted("training aborted (second Ctrl-C) at global iteration {}; {}".format(
                trainer.global_iter, "the last complete snapshot is {}: continue with -r {}".format(snapshot, snapshot)
                if snapshot else "no snapshot was saved"), snapshot=snapshot)
        trainer._stop_requested = True
        logger.warning("Ctrl-C: stopping after this iteration and saving a snapshot (Ctrl-C again to abort)")

    return signal.signal(signal.SIGINT, handler)


def _restore_sigint(previous):
    import signal
    import threading

    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)
