"""Test helper: write PyTorch checkpoint files (zip and legacy formats) from numpy arrays, without torch.

The pickle is emitted opcode by opcode, the way ``torch.save`` lays it out (protocol 2, tensors as
``torch._utils._rebuild_tensor_v2`` with a ``('storage', torch.<T>Storage, key, 'cpu', numel)``
persistent id), so tests can build realistic ``.pth`` files of any content, and crafted ones.
The reader under test is checked against real PyTorch-written files in ../shared/reference/mmdet/pth_files.
"""
import collections
import io
import struct
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage", np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage", np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage",
}


class Raw:
    """Insert these pickle bytes verbatim (for crafted files)."""

    def __init__(self, data):
        self.data = data


class Pickle:
    """A tiny protocol-2 pickle emitter: plain values, OrderedDicts, and tensors as storage records."""

    def __init__(self):
        self.out = io.BytesIO()
        self.storages = collections.OrderedDict()  # key -> bytes
        self.out.write(b"\x80\x02")

    def w(self, b):
        self.out.write(b)

    def glob(self, module, name):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def save(self, x):
        if isinstance(x, Raw):
            self.w(x.data)
        elif x is None:
            self.w(b"N")
        elif x is True or x is False:
            self.w(b"\x88" if x else b"\x89")
        elif isinstance(x, int):
            if -(2 ** 31) <= x < 2 ** 31:
                self.w(b"J" + struct.pack("<i", x))
            else:
                data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
                self.w(b"\x8a" + bytes([len(data)]) + data)
        elif isinstance(x, float):
            self.w(b"G" + struct.pack(">d", x))
        elif isinstance(x, str):
            data = x.encode("utf-8")
            self.w(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(x, tuple):
            self.w(b"(")
            for v in x:
                self.save(v)
            self.w(b"t")
        elif isinstance(x, list):
            self.w(b"]")
            if x:
                self.w(b"(")
                for v in x:
                    self.save(v)
                self.w(b"e")
        elif isinstance(x, dict):
            if type(x) is collections.OrderedDict:
                self.glob("collections", "OrderedDict")
                self.w(b")R")
            else:
                self.w(b"}")
            if x:
                self.w(b"(")
                for k, v in x.items():
                    self.save(k)
                    self.save(v)
                self.w(b"u")
        elif isinstance(x, np.ndarray):
            self.tensor(x)
        else:
            raise TypeError(type(x))

    def tensor(self, a, key=None, offset=0, shape=None, strides=None):
        """A tensor record; by default ``a`` is its own contiguous storage."""
        if key is None:
            key = str(len(self.storages))
            self.storages[key] = np.ascontiguousarray(a)
        base = self.storages[key]
        shape = a.shape if shape is None else shape
        if strides is None:
            strides, acc = [], 1
            for n in reversed(shape):
                strides.insert(0, acc)
                acc *= n
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")
        self.w(b"(")
        self.save("storage")
        self.glob("torch", STORAGE_NAMES[base.dtype])
        self.save(key)
        self.save("cpu")
        self.save(int(base.size))
        if self.legacy:
            self.w(b"N")
        self.w(b"t")
        self.w(b"Q")  # BINPERSID
        self.save(int(offset))
        self.save(tuple(int(n) for n in shape))
        self.save(tuple(int(s) for s in strides))
        self.save(False)
        self.save(collections.OrderedDict())
        self.w(b"tR")

    def finish(self):
        self.w(b".")
        return self.out.getvalue()

    legacy = False


def pickle_bytes(obj, legacy=False):
    p = Pickle()
    p.legacy = legacy
    p.save(obj)
    return p.finish(), p.storages


def _plain_pickle(x):
    p = Pickle()
    p.save(x)
    return p.finish()


def write_pth(path, obj, fmt="zip", build=None):
    """Write ``obj`` (dicts/lists/plain values/np arrays) as a PyTorch checkpoint in ``fmt`` ('zip' or 'legacy').

    ``build(pickle)``, when given, emits the main object instead of ``obj`` (for views and crafted files).
    """
    p = Pickle()
    p.legacy = fmt == "legacy"
    if build is not None:
        build(p)
    else:
        p.save(obj)
    data = p.finish()
    if fmt == "zip":
        name = "archive"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(name + "/data.pkl", data)
            zf.writestr(name + "/byteorder", "little")
            for key, arr in p.storages.items():
                zf.writestr(name + "/data/" + key, arr.tobytes())
            zf.writestr(name + "/version", "3\n")
        return path
    with open(path, "wb") as f:
        f.write(_plain_pickle(MAGIC))
        f.write(_plain_pickle(1001))
        f.write(_plain_pickle({"protocol_version": 1001, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}))
        f.write(data)
        f.write(_plain_pickle(list(p.storages)))
        for arr in p.storages.values():
            f.write(struct.pack("<q", arr.size))
            f.write(arr.tobytes())
    return path
