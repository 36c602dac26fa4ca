"""Readers: sampling, per-sample transforms, batching and collation into Paddle tensors.

Reproducibility is the design constraint: the sample order depends only on ``(seed, epoch)``, the
augmentation of a sample only on ``(seed, epoch, dataset index)``, so a run gives the same batches
with 0 or N worker processes, and a resumed epoch (``iter_from``) continues exactly where it stopped.

Distributed split: each rank takes every ``world_size``-th sample of the epoch order. With
``drop_last`` the order is truncated to a multiple of ``world_size`` (then of the batch size per
rank); without it, the order is padded cyclically so every rank has the same number of batches
(the padded samples repeat the first ones; results should be de-duplicated by ``im_id``).
"""
import logging
import math
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import traceback

import numpy as np

from ..core.config import ConfigError, TaggedDict, create
from ..core.registry import closest
from .transforms import build_transforms

__all__ = ["Reader", "build_reader", "collate", "WorkerError", "READER_SECTIONS"]

logger = logging.getLogger(__name__)

READER_SECTIONS = {
    "train": ("TrainReader", "TrainDataset"),
    "eval": ("EvalReader", "EvalDataset"),
    "test": ("TestReader", "TestDataset"),
}
_READER_DEFAULTS = {
    "train": {"batch_size": 1, "shuffle": True, "drop_last": True, "group_by_size": False},
    "eval": {"batch_size": 1, "shuffle": False, "drop_last": False, "group_by_size": True},
    "test": {"batch_size": 1, "shuffle": False, "drop_last": False, "group_by_size": True},
}
# Keys PaddleDetection readers accept that do not change what we produce (gt always stays per image).
_IGNORED_READER_KEYS = ("collate_batch", "use_shared_memory", "inputs_def")
_READER_KEYS = ("sample_transforms", "batch_transforms", "batch_size", "shuffle", "drop_last",
                "group_by_size") + _IGNORED_READER_KEYS
_BATCH_RNG_TAG = 0xBA7C  # separates the batch-transform streams from the per-sample ones


class WorkerError(RuntimeError):
    """Traceback text of an exception raised in a reader worker (attached as ``__cause__``)."""


# ------------------------------------------------------------------------------------------ batch making


class _BatchMaker(object):
    """Turns dataset indices into transformed samples; picklable so worker processes can run it."""

    def __init__(self, dataset, sample_ops, batch_ops, seed, gt_bitmaps=False):
        self.dataset = dataset
        self.sample_ops = sample_ops
        self.batch_ops = batch_ops
        self.seed = seed
        self.gt_bitmaps = gt_bitmaps

    def sample(self, epoch, index):
        record = self.dataset[int(index)]
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        for op in self.sample_ops:
            try:
                record = op(record, rng)
            except Exception as e:
                raise _with_context(e, "in {} for {} (dataset index {})".format(
                    type(op).__name__, record.get("im_file", "<no im_file>"), index), record.get("im_file"))
        return record

    def __call__(self, epoch, rank, batch_pos, indices):
        samples = [self.sample(epoch, i) for i in indices]
        rng = np.random.default_rng([self.seed, epoch, _BATCH_RNG_TAG, rank, batch_pos])
        for op in self.batch_ops:
            try:
                samples = op(samples, rng)
            except Exception as e:
                files = [s.get("im_file", "?") for s in samples]
                raise _with_context(e, "in batch transform {} for images {}".format(type(op).__name__, files))
        if self.gt_bitmaps:
            for sample in samples:
                add_gt_bitmaps(sample)
        return samples


def add_gt_bitmaps(sample):
    """``gt_segm [G,H,W]`` uint8: each object's mask on the (padded) network input, from ``gt_poly``.

    The R-CNN mask targets are RoIAligned from these on the device (``MaskAssigner``), so they are made
    here, in the reader (worker processes), after every transform (resize, flip, padding) has been applied.
    """
    if "gt_poly" not in sample or sample.get("gt_segm") is not None:
        return sample
    from .transforms import segm_to_bitmap

    image = sample["image"]
    h, w = image.shape[1:] if image.ndim == 3 and image.shape[0] in (1, 3) else image.shape[:2]
    masks = np.zeros((len(sample["gt_poly"]), h, w), dtype=np.uint8)
    for i, segm in enumerate(sample["gt_poly"]):
        if isinstance(segm, (list, tuple)):
            if segm:
                masks[i] = segm_to_bitmap(segm, h, w)
            continue
        bitmap = segm_to_bitmap(segm, h, w)  # RLE / bitmap at the (unpadded) transformed size
        bh, bw = min(bitmap.shape[0], h), min(bitmap.shape[1], w)
        masks[i, :bh, :bw] = bitmap[:bh, :bw]
    sample["gt_segm"] = masks
    return sample


def _with_context(exc, context, already_named=None):
    """The same exception type with ``context`` appended, unless the message already names the file."""
    msg = str(exc)
    if already_named and already_named in msg:
        return exc
    try:
        new = type(exc)("{} [{}]".format(msg, context))
    except Exception:  # exception types with unusual constructors keep their message
        return exc
    new.__cause__ = exc
    return new


# ------------------------------------------------------------------------------------------ collation


_STACK_FLOAT = ("image", "im_shape", "scale_factor")
_PER_IMAGE_TENSORS = {"gt_bbox": ("float32", 4), "gt_class": ("int32", 1), "is_crowd": ("int32", 1)}
_HOST_ARRAYS = ("h", "w")
# Record keys that only tell Decode what to load.
_INTERNAL_KEYS = ("semantic_file", "semantic_from_instances", "semantic_crowd_poly")


def collate(samples):
    """Samples -> batch dict: stacked Paddle tensors for image-level fields, lists for per-object ones."""
    import paddle

    keys = []
    for s in samples:
        keys.extend(k for k in s if k not in keys)
    files = [s.get("im_file", "?") for s in samples]
    batch = {}
    for key in keys:
        if key in _INTERNAL_KEYS:
            continue
        values = [s.get(key) for s in samples]
        if key in _STACK_FLOAT or key in ("im_id", "semantic"):
            if any(v is None for v in values):
                raise ConfigError("collate: {!r} is missing for some images of the batch {}".format(key, files))
            shapes = {np.shape(v) for v in values}
            if len(shapes) != 1:
                hint = " (add PadBatch to batch_transforms)" if key in ("image", "semantic") else ""
                raise ConfigError("collate: {!r} has different shapes {} in the batch {}{}".format(
                    key, [np.shape(v) for v in values], files, hint))
            if key == "im_id":
                arr = np.stack([np.asarray(v, np.int64).reshape(-1) for v in values])
            elif key == "semantic":
                arr = np.stack(values).astype(np.int32)[:, None]
            else:
                arr = np.stack(values).astype(np.float32)
            batch[key] = paddle.to_tensor(arr)
        elif key in _PER_IMAGE_TENSORS:
            dtype, cols = _PER_IMAGE_TENSORS[key]
            batch[key] = [None if v is None else paddle.to_tensor(np.asarray(v, dtype).reshape(-1, cols))
                          for v in values]
        elif key == "gt_segm":
            batch[key] = [None if v is None else paddle.to_tensor(np.asarray(v, np.uint8)) for v in values]
        elif key in _HOST_ARRAYS:
            batch[key] = np.asarray(values)
        else:
            batch[key] = values
    return batch


# ------------------------------------------------------------------------------------------ reader


class Reader(object):
    """Iterable of collated batches for one rank; call ``set_epoch`` before each epoch.

    ``len(reader)`` is the number of batches per epoch on this rank. ``skip(n)`` makes the next
    iteration start at batch ``n`` of the epoch; ``iter_from(n)`` does the same directly.
    ``group_by_size`` (evaluation/inference): batches only hold images with the same padded size, so
    batching does not change results; with several ranks the batches are dealt out round-robin.
    ``gt_bitmaps`` (training): every sample also gets ``gt_segm``, its objects' masks on the padded
    input (see :func:`add_gt_bitmaps`).
    """

    def __init__(self, dataset, sample_transforms=(), batch_transforms=(), batch_size: int = 1,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, worker_num: int = 0, prefetch: int = 2, name: str = "Reader",
                 mp_context: str = None, group_by_size: bool = False, gt_bitmaps: bool = False):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError("{}.batch_size must be a positive int, got {!r}".format(name, batch_size))
        if not isinstance(worker_num, int) or worker_num < 0:
            raise ConfigError("{}: worker_num must be an int >= 0, got {!r}".format(name, worker_num))
        if not 0 <= rank < world_size:
            raise ValueError("{}: rank {} is not in [0, world_size={})".format(name, rank, world_size))
        if not isinstance(seed, int) or seed < 0:
            raise ValueError("{}: seed must be an int >= 0, got {!r}".format(name, seed))
        self.dataset = dataset
        self.name = name
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.worker_num = worker_num
        self.prefetch = max(1, int(prefetch))
        self.mp_context = mp_context
        self.group_by_size = bool(group_by_size)
        self.epoch = 0
        self._start = 0
        self._maker = _BatchMaker(dataset, list(sample_transforms), list(batch_transforms), seed, gt_bitmaps)
        self._logged_drop = False

    # ---------------------------------------------------------------- sampling

    def set_epoch(self, epoch: int):
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError("{}.set_epoch: epoch must be an int >= 0, got {!r}".format(self.name, epoch))
        self.epoch = int(epoch)

    def batch_indices(self, epoch=None):
        """Dataset indices of this rank's batches for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        if n == 0:
            raise ConfigError("{}: the dataset {!r} is empty".format(self.name, self.dataset))
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.group_by_size and not self.shuffle and self.batch_size > 1 and not self.drop_last:
            grouped = self._size_batches(order)
            if grouped is not None:
                return grouped[self.rank::self.world_size]
        ws, bs = self.world_size, self.batch_size
        if self.drop_last:
            per_rank = n // ws
            order = order[: per_rank * ws]
        else:
            per_rank = int(math.ceil(n / float(ws)))
            order = np.resize(order, per_rank * ws)  # cyclic padding
        mine = order[self.rank::ws]
        batches = [mine[i:i + bs].tolist() for i in range(0, len(mine), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        if not batches:
            raise ConfigError("{}: {} samples on {} rank(s) with batch_size {} and drop_last give no batch".format(
                self.name, n, ws, bs))
        if self.drop_last and not self._logged_drop:
            unused = n - len(batches) * bs * ws
            if unused:
                logger.info("%s: drop_last leaves %d of %d samples out of each epoch (a different subset every "
                            "epoch when shuffling)", self.name, unused, n)
            self._logged_drop = True
        return batches

    def _canvas_key(self, index):
        """The padded size image ``index`` gets (from its recorded size, Resize and PadBatch), or None."""
        from .transforms import PadBatch, Resize

        records = getattr(self.dataset, "roidbs", None)
        if not records:
            return None
        r = records[index % len(records)]
        h, w = int(r.get("h") or 0), int(r.get("w") or 0)
        if not h or not w:
            return None
        for op in self._maker.sample_ops:
            if isinstance(op, Resize):
                sy, sx, _, _ = op.scale_for(h, w)
                h, w = int(round(h * sy)), int(round(w * sx))  # cv2's output size
        stride = max([op.pad_to_stride for op in self._maker.batch_ops if isinstance(op, PadBatch)] + [1])
        return (-(-h // stride) * stride, -(-w // stride) * stride)

    def _size_batches(self, order):
        """Batches that never mix padded sizes: a batch is padded exactly as each of its images alone,
        so batched results equal single-image ones. Images are visited by size; returns None when the
        sizes are unknown (e.g. a plain image folder)."""
        keys = [self._canvas_key(i) for i in order]
        if any(k is None for k in keys):
            return None
        groups = {}
        for i, k in zip(order, keys):
            groups.setdefault(k, []).append(int(i))
        batches = []
        for k in sorted(groups):
            members = groups[k]
            batches.extend(members[j:j + self.batch_size] for j in range(0, len(members), self.batch_size))
        return batches

    def __len__(self):
        return len(self.batch_indices())

    def skip(self, n: int):
        """Make the next iteration start at batch ``n`` of the current epoch (for resuming)."""
        self._check_start(n)
        self._start = int(n)
        return self

    def _check_start(self, n):
        total = len(self)
        if not isinstance(n, (int, np.integer)) or not 0 <= n <= total:
            raise ValueError("{}: cannot start at batch {!r}; the epoch has {} batches".format(self.name, n, total))

    def __iter__(self):
        start, self._start = self._start, 0
        return self.iter_from(start)

    def iter_from(self, batch_index: int):
        """Batches of the current epoch from ``batch_index`` on."""
        self._check_start(batch_index)
        batches = self.batch_indices()
        return self._generate(batches, int(batch_index))

    def load_batch(self, batch_pos: int, indices=None):
        """Transformed, uncollated samples of batch ``batch_pos`` (numpy; for inspection and tests)."""
        indices = self.batch_indices()[batch_pos] if indices is None else indices
        return self._maker(self.epoch, self.rank, batch_pos, indices)

    def _generate(self, batches, start):
        epoch, rank = self.epoch, self.rank
        if self.worker_num == 0 or len(batches) - start <= 0:
            for pos in range(start, len(batches)):
                yield collate(self._maker(epoch, rank, pos, batches[pos]))
            return
        pool = _WorkerPool(self._maker, min(self.worker_num, len(batches) - start), self.prefetch,
                           self.mp_context, self.name)
        try:
            tasks = [(epoch, rank, pos, batches[pos]) for pos in range(start, len(batches))]
            for samples in pool.run(tasks, describe=self._describe):
                yield collate(samples)
        finally:
            pool.close()

    def _describe(self, indices):
        files = []
        for i in indices[:4]:
            try:
                files.append(self.dataset[int(i)].get("im_file", "?"))
            except Exception:  # only used to enrich an error message
                files.append("index {}".format(i))
        return files

    def __repr__(self):
        return "{}(dataset={!r}, batch_size={}, shuffle={}, drop_last={}, rank={}/{}, worker_num={})".format(
            self.name, self.dataset, self.batch_size, self.shuffle, self.drop_last, self.rank, self.world_size,
            self.worker_num)


# ------------------------------------------------------------------------------------------ workers


def _worker_loop(maker, in_q, out_q):
    """Worker process body: make batches in the order they arrive; send results or the exception.

    No thread settings are touched here: ``cv2.setNumThreads`` deadlocks in a forked child whose
    parent had already used OpenCV's thread pool.
    """
    # Paddle's fatal-signal handler (inherited through fork) would print a C++ "traceback" if the pool
    # ever has to terminate us; a worker has nothing to report then, so use the default action.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Batches prefetched but never read (the consumer stopped early) must not block our exit.
    out_q.cancel_join_thread()
    parent = os.getppid()
    while True:
        try:
            task = in_q.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:  # the main process died without telling us
                break
            continue
        if task is None:
            break
        pos = task[2]
        try:
            out_q.put(("ok", pos, maker(*task)))
        except BaseException as e:  # noqa: B902 -- every failure must reach the main process
            out_q.put(("error", pos, _pack_exception(e)))


def _pack_exception(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        payload = pickle.dumps(exc)
        pickle.loads(payload)
    except Exception:
        payload = None
    return payload, type(exc).__name__, str(exc), tb


def _raise_packed(packed, name, pos):
    payload, type_name, msg, tb = packed
    exc = None
    if payload is not None:
        try:
            exc = pickle.loads(payload)
        except Exception:
            exc = None
    if exc is None:
        exc = RuntimeError("{}: {}".format(type_name, msg))
    raise exc from WorkerError("{} worker traceback (batch {}):\n{}".format(name, pos, tb))


class _WorkerPool(object):
    """Worker processes with one task and one result queue each; batch ``k`` goes to worker ``k % n``.

    Reading the result queues round-robin gives the batches back in order without any reordering
    buffer; each worker has at most ``prefetch`` batches queued.
    """

    def __init__(self, maker, num_workers, prefetch, mp_context, name):
        method = mp_context or ("fork" if sys.platform.startswith("linux") else "spawn")
        ctx = multiprocessing.get_context(method)
        self.name = name
        self.prefetch = prefetch
        self.in_qs = [ctx.Queue() for _ in range(num_workers)]
        self.out_qs = [ctx.Queue() for _ in range(num_workers)]
        self.procs = []
        for i in range(num_workers):
            p = ctx.Process(target=_worker_loop, args=(maker, self.in_qs[i], self.out_qs[i]),
                            name="{}-worker-{}".format(name, i), daemon=True)
            p.start()
            self.procs.append(p)

    def run(self, tasks, describe):
        n = len(self.procs)
        sent = 0
        for _ in range(min(len(tasks), n * self.prefetch)):
            self.in_qs[sent % n].put(tasks[sent])
            sent += 1
        for k, task in enumerate(tasks):
            w = k % n
            status, pos, payload = self._get(w, task, describe)
            if sent < len(tasks):
                self.in_qs[sent % n].put(tasks[sent])
                sent += 1
            if status == "error":
                _raise_packed(payload, self.name, pos)
            if pos != task[2]:
                raise RuntimeError("{}: worker {} returned batch {} instead of {}".format(self.name, w, pos, task[2]))
            yield payload

    def _get(self, w, task, describe):
        while True:
            try:
                return self.out_qs[w].get(timeout=1.0)
            except queue.Empty:
                proc = self.procs[w]
                if not proc.is_alive():
                    raise RuntimeError("{}: worker {} (pid {}) exited with code {} while loading batch {} "
                                       "(images {})".format(self.name, w, proc.pid, proc.exitcode, task[2],
                                                            describe(task[3])))

    def close(self):
        for q in self.in_qs:
            try:
                q.put_nowait(None)
            except Exception:  # pragma: no cover
                pass
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
        for q in self.in_qs + self.out_qs:
            q.cancel_join_thread()
            q.close()


# ------------------------------------------------------------------------------------------ config


def _resolve_rank(rank, world_size):
    if rank is None or world_size is None:
        import paddle.distributed as dist

        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    return int(rank), int(world_size)


def _reader_options(spec, mode, section, where):
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ConfigError("{}: {} must be a mapping, got {!r}".format(where, section, spec))
    for key in spec:
        if key not in _READER_KEYS:
            hint = closest(str(key), _READER_KEYS)
            raise ConfigError("{}: {!r} is not a key of {}{}; valid keys: {}".format(
                where, key, section, "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else "",
                ", ".join(_READER_KEYS)))
    opts = dict(_READER_DEFAULTS[mode])
    opts.update({k: spec[k] for k in ("batch_size", "shuffle", "drop_last", "group_by_size") if k in spec})
    for key in ("shuffle", "drop_last", "group_by_size"):
        if not isinstance(opts[key], bool):
            raise ConfigError("{}: {}.{} must be true or false, got {!r}".format(where, section, key, opts[key]))
    for key in ("sample_transforms", "batch_transforms"):
        if spec.get(key) is not None and not isinstance(spec[key], list):
            raise ConfigError("{}: {}.{} must be a list of transforms, got {!r}".format(where, section, key, spec[key]))
    return opts


def build_reader(cfg, mode, dataset=None, seed: int = 0, rank: int = None, world_size: int = None,
                 worker_num: int = None, mp_context: str = None):
    """The ``Reader`` for ``mode`` ('train' | 'eval' | 'test') from ``cfg['TrainReader']`` etc.

    ``dataset``: a dataset object; by default ``cfg['TrainDataset']`` (etc.) is created.
    ``rank``/``world_size``: default to ``paddle.distributed``'s. ``worker_num``: default ``cfg['worker_num']``.
    """
    if mode not in READER_SECTIONS:
        raise ValueError("build_reader: mode must be one of {}, got {!r}".format(sorted(READER_SECTIONS), mode))
    section, ds_key = READER_SECTIONS[mode]
    source_of = getattr(cfg, "source_of", lambda *k: "<config>")
    where = source_of(section)
    if section not in cfg:
        raise ConfigError("{}: the config has no {} section (needed for mode {!r})".format(where, section, mode))
    spec = cfg[section]
    opts = _reader_options(spec, mode, section, where)
    sample_ops = build_transforms(spec.get("sample_transforms"), where="{}.sample_transforms".format(section))
    batch_ops = build_transforms(spec.get("batch_transforms"), where="{}.batch_transforms".format(section))
    if dataset is None:
        ds_spec = cfg.get(ds_key)
        if ds_spec is None:
            raise ConfigError("{}: the config has no {} (needed for mode {!r})".format(source_of(ds_key), ds_key, mode))
        if not isinstance(ds_spec, TaggedDict):
            raise ConfigError("{}: {} must be a tagged dataset such as '!COCODataSet {{...}}', got {!r}".format(
                source_of(ds_key), ds_key, ds_spec))
        dataset = create(ds_spec, cfg, where="{} in {}".format(ds_key, source_of(ds_key)))
    if worker_num is None:
        worker_num = cfg.get("worker_num", 0) or 0
    rank, world_size = _resolve_rank(rank, world_size)
    return Reader(dataset, sample_ops, batch_ops, batch_size=opts["batch_size"], shuffle=opts["shuffle"],
                  drop_last=opts["drop_last"], seed=seed, rank=rank, world_size=world_size,
                  worker_num=int(worker_num), name=section, mp_context=mp_context,
                  group_by_size=opts["group_by_size"], gt_bitmaps=mode == "train")

