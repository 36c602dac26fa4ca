"""Find host synchronisations: every device-to-host read of a tensor inside a block becomes an error.

On a GPU, ``t.numpy()``, ``t.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (an ``if`` on a tensor) and
friends make the CPU wait until every queued kernel has finished: the GPU then idles while Python
catches up. The model's forward pass has none by design; :func:`forbid_host_sync` proves it (and finds
the culprit, with a traceback, when one slips in)::

    with forbid_host_sync():
        losses = model(batch)
"""
import contextlib
import threading

import paddle

__all__ = ["HostSyncError", "forbid_host_sync", "HOST_READS"]

# Tensor methods that copy device memory to the host (or need its values there).
HOST_READS = ("numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__nonzero__", "__index__",
              "__array__", "__complex__")

_LOCK = threading.Lock()


class HostSyncError(RuntimeError):
    """A tensor was read on the host inside a ``forbid_host_sync`` block."""


@contextlib.contextmanager
def forbid_host_sync():
    """Inside the block, any of :data:`HOST_READS` on a ``paddle.Tensor`` raises :class:`HostSyncError`."""
    tensor_type = paddle.Tensor
    with _LOCK:
        saved = {name: getattr(tensor_type, name) for name in HOST_READS if hasattr(tensor_type, name)}

        def make(name):
            def refuse(self, *args, **kwargs):
                raise HostSyncError("host synchronisation: Tensor.{} on a tensor of shape {} inside a "
                                    "forbid_host_sync block".format(name, list(self.shape)))
            return refuse

        for name in saved:
            setattr(tensor_type, name, make(name))
        try:
            yield
        finally:
            for name, method in saved.items():
                setattr(tensor_type, name, method)
