"""Reading PyTorch checkpoints (``.pth``) into numpy arrays without PyTorch and without running code.

``torch.save`` writes a pickle; unpickling it with PyTorch (or plain ``pickle``) can run any code the
file names. This reader uses a restricted unpickler that admits only what PyTorch writes for plain tensors
and parameters (storage types as persistent ids, the tensor rebuild functions, ``torch`` dtypes),
``collections.OrderedDict`` and plain containers/scalars. Anything else is refused *before* it is called,
with an error naming ``module.name`` and the file. The rebuild functions here are our own: they record
``(storage, offset, shape, strides)`` and the arrays are cut from the raw storage bytes afterwards, with
every view checked to lie inside its storage.

Both of PyTorch's file formats are read:

* **zip** (``torch.save`` default since 1.6): an archive ``<name>/data.pkl`` (the pickle),
  ``<name>/data/<key>`` (one raw storage each), ``<name>/byteorder`` (``little``/``big``, optional).
* **legacy** (before 1.6, or ``_use_new_zipfile_serialization=False``): consecutive pickles ``magic number``,
  ``protocol version``, ``sys_info``, the main object, the list of storage keys; then per key an int64
  element count followed by the raw storage.

Public API: ``load_torch_file`` (the whole object, tensors as numpy arrays), ``read_torch_state_dict``
(``(state_dict, meta)`` for ``{'meta', 'state_dict'}`` files or bare state dicts), ``check_torch_file``
(is this a complete, well-formed PyTorch checkpoint? reads storages in chunks, keeps nothing), and
``torch_file_format`` (``'zip'``, ``'legacy'`` or None).
"""
import collections
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np

from .checkpoint import CheckpointError, UnsafeCheckpointError

__all__ = [
    "LEGACY_MAGIC_NUMBER",
    "check_torch_file",
    "load_torch_file",
    "read_torch_state_dict",
    "torch_file_format",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_READ_CHUNK = 1 << 24

# torch.<Name>Storage -> numpy dtype of its elements (bfloat16 is widened to float32 after reading).
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "untyped",  # raw bytes; the tensor record (_rebuild_tensor_v3) gives the dtype
}
# torch.<dtype attribute> -> numpy dtype name (as written by _rebuild_tensor_v3)
_TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool", "complex64": "complex64", "complex128": "complex128",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
}


def _itemsize(dtype_name):
    return 2 if dtype_name == "bfloat16" else (1 if dtype_name == "untyped" else np.dtype(dtype_name).itemsize)


# --------------------------------------------------------------------------------------------
# Markers and records produced while unpickling (never the caller's objects)
# --------------------------------------------------------------------------------------------


class _Refusing:
    """Base of our markers: calling one or restoring state into one is refused (a crafted file would)."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise UnsafeCheckpointError("calls {}, which a PyTorch checkpoint never does".format(self))

    def __setstate__(self, state):
        raise UnsafeCheckpointError("restores state into {}, which a PyTorch checkpoint never does".format(self))


class _StorageType(_Refusing):
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return "torch.{}".format(self.name)


class _TorchDtype(_Refusing):
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return "torch.{}".format(self.name)


class _TensorType(_Refusing):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _StorageRef(_Refusing):
    """A (view of a) storage named in the pickle: raw bytes come later, from the archive or file tail."""

    __slots__ = ("key", "dtype", "offset", "numel")

    def __init__(self, key, dtype, offset, numel):
        self.key, self.dtype, self.offset, self.numel = key, dtype, offset, numel

    def __repr__(self):
        return "storage {!r}".format(self.key)


class _TensorRef(_Refusing):
    __slots__ = ("storage", "dtype", "offset", "shape", "strides")

    def __init__(self, storage, dtype, offset, shape, strides):
        self.storage, self.dtype, self.offset, self.shape, self.strides = storage, dtype, offset, shape, strides

    def __repr__(self):
        return "tensor {} {}".format(self.dtype, list(self.shape))


def _int_tuple(value, what):
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise CheckpointError("malformed tensor record: {} is {!r}, expected a tuple of ints".format(what, value))
    return tuple(value)


def _tensor(storage, storage_offset, size, stride, dtype=None):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("malformed tensor record: storage is a {}".format(type(storage).__name__))
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError("malformed tensor record: storage offset {!r}".format(storage_offset))
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(v < 0 for v in size + stride):
        raise CheckpointError("malformed tensor record: size {} with stride {}".format(list(size), list(stride)))
    if dtype is None:
        dtype = storage.dtype
    if dtype == "untyped":
        raise CheckpointError("malformed tensor record: an untyped storage without a dtype")
    return _TensorRef(storage, dtype, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointError("malformed tensor record: dtype is {!r}".format(dtype))
    return _tensor(storage, storage_offset, size, stride, dtype=dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointError("malformed parameter record: data is a {}".format(type(data).__name__))
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
               _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensors with Python attributes: only plain Tensor/Parameter types, rebuilt by our own functions."""
    if func not in _REBUILDERS or not isinstance(new_type, _TensorType) or not isinstance(args, tuple):
        raise UnsafeCheckpointError("rebuilds a tensor as {!r} through {!r}".format(new_type, func))
    return func(*args)


def _latin1_bytes(text, encoding):
    """``_codecs.encode(str, 'latin1')``: how protocol-2 pickles spell ``bytes``; no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("calls _codecs.encode with {!r}".format(encoding))
    return text.encode("latin-1")


def _empty_bytes(*args):
    if args:
        raise UnsafeCheckpointError("calls builtins.bytes with arguments")
    return b""


def _allowed_globals():
    allowed = {("collections", "OrderedDict"): collections.OrderedDict}
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        allowed[("torch._utils", name)] = globals()[name]
    allowed[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    allowed[("torch.storage", "UntypedStorage")] = allowed[("torch", "UntypedStorage")]
    for name, dtype in _TORCH_DTYPES.items():
        allowed[("torch", name)] = _TorchDtype(name, dtype)
    for key in (("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.nn.parameter", "Parameter")):
        allowed[key] = _TensorType(".".join(key))
    allowed[("torch", "Size")] = tuple
    for mod in ("builtins", "__builtin__"):
        for name in ("tuple", "list", "dict", "set", "frozenset"):
            allowed[(mod, name)] = getattr(__import__("builtins"), name)
        allowed[(mod, "bytes")] = _empty_bytes
    allowed[("_codecs", "encode")] = _latin1_bytes
    return allowed


_ALLOWED = _allowed_globals()


class _TorchUnpickler(pickle.Unpickler):
    """Admits only ``_ALLOWED``; storages (persistent ids) are recorded in ``declared``."""

    def __init__(self, f, source, declared):
        super().__init__(f)
        self._source = source
        self._declared = declared  # key -> (dtype, numel in elements or None)

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(
                "it references {}.{}, which is not a tensor, a tensor storage or a plain container "
                "(unpickling it could run code)".format(module, name))
        return obj

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise UnsafeCheckpointError("unknown persistent id {!r} (only tensor storages are allowed)".format(kind))
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError("storage type {!r} is not a torch storage class".format(storage_type))
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError("malformed storage record {!r}".format(pid[:5]))
        # An untyped storage counts bytes; its tensor record (_rebuild_tensor_v3) supplies the dtype.
        dtype = "uint8" if storage_type.dtype == "untyped" else storage_type.dtype
        known = self._declared.get(key)
        if known is not None and _itemsize(known[0]) * known[1] != _itemsize(dtype) * numel:
            raise CheckpointError("storage {!r} is declared twice with different sizes".format(key))
        if known is None:
            self._declared[key] = (dtype, numel)
        offset, count = 0, numel
        if view is not None:  # legacy files of old PyTorch: (view_key, offset, size) into the root storage
            _view_key, offset, count = view
            if not (isinstance(offset, int) and isinstance(count, int) and 0 <= offset and offset + count <= numel):
                raise CheckpointError("malformed storage view {!r}".format(view))
        return _StorageRef(key, storage_type.dtype, offset, count)


def _unpickle(f, source, declared):
    return _TorchUnpickler(f, source, declared).load()


# --------------------------------------------------------------------------------------------
# Turning records into arrays
# --------------------------------------------------------------------------------------------


def _storage_array(raw, dtype, big_endian):
    """View raw storage bytes as elements of ``dtype`` (bfloat16 widened to float32)."""
    if dtype == "bfloat16":
        half = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2", count=len(raw) // 2)
        return (half.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">" if big_endian else "<")
    arr = np.frombuffer(raw, dtype=dt, count=len(raw) // dt.itemsize)
    return arr if dt.isnative else arr.astype(dt.newbyteorder("="))


def _materialize(ref, raw_by_key, big_endian):
    """Cut one tensor from its storage; every element it addresses must lie inside the storage."""
    st = ref.storage
    raw = raw_by_key[st.key]
    itemsize = _itemsize(ref.dtype)
    elements = _storage_array(raw, ref.dtype, big_endian)
    base = st.offset * _itemsize(st.dtype) // itemsize if st.dtype != ref.dtype else st.offset
    view_len = st.numel * _itemsize(st.dtype) // itemsize if st.dtype != ref.dtype else st.numel
    view_len = min(view_len, len(elements) - base)
    shape, strides = ref.shape, ref.strides
    numel = math.prod(shape)
    out_dtype = np.float32 if ref.dtype == "bfloat16" else np.dtype(ref.dtype)
    if numel == 0:
        return np.empty(shape, dtype=out_dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(shape, strides))
    if last >= view_len or numel > view_len:
        raise CheckpointError("tensor {} {} at offset {} with strides {} reaches past its storage {!r} of {} "
                              "elements".format(ref.dtype, list(shape), ref.offset, list(strides), st.key, view_len))
    start = base + ref.offset
    view = np.lib.stride_tricks.as_strided(elements[start:], shape=shape,
                                           strides=[s * elements.itemsize for s in strides], writeable=False)
    return np.array(view, dtype=out_dtype, order="C", copy=True)


def _replace_refs(obj, convert):
    """Copy the unpickled tree with every ``_TensorRef`` converted (order and dict types kept, cycles too)."""
    memo = {}

    def walk(x):
        if isinstance(x, _TensorRef):
            return convert(x)
        if isinstance(x, _Refusing):
            raise CheckpointError("a {!r} outside a tensor record".format(x))
        if id(x) in memo:
            return memo[id(x)]
        if isinstance(x, dict):
            out = type(x)() if type(x) in (dict, collections.OrderedDict) else dict()
            memo[id(x)] = out
            for k, v in x.items():
                out[walk(k)] = walk(v)
            return out
        if isinstance(x, list):
            out = []
            memo[id(x)] = out
            out.extend(walk(v) for v in x)
            return out
        if isinstance(x, (tuple, set, frozenset)):
            return type(x)(walk(v) for v in x)
        return x

    return walk(obj)


def _collect_refs(obj):
    refs, seen, stack = [], set(), [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, _TensorRef):
            refs.append(x)
        elif id(x) not in seen and isinstance(x, (dict, list, tuple, set, frozenset)):
            seen.add(id(x))
            stack.extend(v for kv in x.items() for v in kv) if isinstance(x, dict) else stack.extend(x)
    return refs


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def torch_file_format(path):
    """``'zip'`` or ``'legacy'`` when ``path`` is a PyTorch checkpoint file, else None (reads the head only)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                return "zip" if _zip_prefix(zf.namelist()) is not None else None
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
    return "legacy" if _starts_with_legacy_magic(head) else None


def _starts_with_legacy_magic(head):
    if not head.startswith(b"\x80"):
        return False
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(head)):
            if op.name in ("PROTO", "FRAME"):
                continue
            return op.name in ("LONG1", "LONG4", "INT", "LONG") and arg == LEGACY_MAGIC_NUMBER
    except Exception:  # a cut-off head: the first opcode told us enough or nothing
        return False
    return False


def _zip_prefix(names):
    """The archive's record prefix ``<name>/`` (the folder holding ``data.pkl``), or None."""
    prefixes = [n[: -len("data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not prefixes and "data.pkl" in names:
        prefixes = [""]
    return prefixes[0] if len(prefixes) == 1 else None


def _read_zip(path, f, keep_data):
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise CheckpointError("{} is not a complete zip archive ({}); the file is truncated or corrupt".format(
            path, e)) from None
    with zf:
        names = zf.namelist()
        prefix = _zip_prefix(names)
        if prefix is None:
            raise CheckpointError("{} is a zip archive without a PyTorch data.pkl record".format(path))
        big_endian = False
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError("{}: unknown byte order {!r}".format(path, order))
            big_endian = order == "big"
        declared = {}
        with zf.open(prefix + "data.pkl") as pf:
            obj = _unpickle(pf, path, declared)
        raw_by_key = {}
        for key, (dtype, numel) in declared.items():
            name = prefix + "data/" + key
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise CheckpointError("{}: storage record {} is missing".format(path, name)) from None
            need = numel * _itemsize(dtype)
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError("{}: storage record {} is compressed; PyTorch never writes that".format(
                    path, name))
            if info.file_size < need:
                raise CheckpointError("{}: storage record {} has {} bytes, {} expected".format(
                    path, name, info.file_size, need))
            raw_by_key[key] = _read_record(zf, name, need, keep_data)
    return obj, raw_by_key, big_endian


def _read_record(zf, name, need, keep_data):
    """Read one storage (CRC-checked by zipfile); without ``keep_data`` only check it, chunk by chunk."""
    parts = [] if keep_data else None
    left = need
    with zf.open(name) as rf:
        while True:
            chunk = rf.read(_READ_CHUNK)
            if not chunk:
                break
            if parts is not None and left > 0:
                parts.append(chunk[:left])
            left -= len(chunk)
    return b"".join(parts) if parts is not None else None


def _read_legacy(path, f, keep_data):
    declared = {}
    magic = _unpickle(f, path, {})
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("{} is not a PyTorch checkpoint (no magic number)".format(path))
    protocol = _unpickle(f, path, {})
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError("{}: unsupported PyTorch legacy protocol version {!r}".format(path, protocol))
    sys_info = _unpickle(f, path, {})
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj = _unpickle(f, path, declared)
    keys = _unpickle(f, path, {})
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("{}: malformed storage key list".format(path))
    missing = sorted(set(declared) - set(keys))
    if missing:
        raise CheckpointError("{}: storages {} are used but not stored".format(path, missing[:5]))
    size = os.fstat(f.fileno()).st_size
    raw_by_key = {}
    order = "<" if not big_endian else ">"
    for key in keys:
        if key not in declared:
            raise CheckpointError("{}: storage {!r} is stored but was never declared".format(path, key))
        dtype, numel = declared[key]
        header = f.read(8)
        if len(header) < 8:
            raise CheckpointError("{} is truncated: storage {!r} is missing".format(path, key))
        (count,) = struct.unpack(order + "q", header)
        nbytes = count * _itemsize(dtype)
        if count != numel:
            raise CheckpointError("{}: storage {!r} holds {} elements, {} declared".format(path, key, count, numel))
        if f.tell() + nbytes > size:
            raise CheckpointError("{} is truncated: storage {!r} needs {} bytes, {} left".format(
                path, key, nbytes, size - f.tell()))
        if keep_data:
            raw_by_key[key] = f.read(nbytes)
        else:
            f.seek(nbytes, os.SEEK_CUR)
            raw_by_key[key] = None
    if f.tell() != size:
        raise CheckpointError("{}: {} unexpected bytes after the last storage".format(path, size - f.tell()))
    return obj, raw_by_key, big_endian


def _read(path, keep_data):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError("checkpoint not found: {}".format(path))
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(0)
        if not head:
            raise CheckpointError("{} is empty (0 bytes), not a PyTorch checkpoint".format(path))
        try:
            if head.startswith(_ZIP_MAGIC):
                return _read_zip(path, f, keep_data)
            if _starts_with_legacy_magic(head):
                return _read_legacy(path, f, keep_data)
        except UnsafeCheckpointError as e:
            raise UnsafeCheckpointError(_with_path(path, e, "refusing to load {}: ")) from None
        except CheckpointError as e:
            raise CheckpointError(_with_path(path, e, "{}: ")) from None
        except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
                IndexError, AttributeError, struct.error, RecursionError, OverflowError, MemoryError,
                UnicodeDecodeError, OSError) as e:
            raise CheckpointError("{} is truncated or corrupt: {}".format(path, _one_line(e))) from None
    raise CheckpointError("{} is not a PyTorch checkpoint: it is neither a zip archive with data.pkl nor a legacy "
                          "torch.save file (starts with {!r})".format(path, head[:16]))


def _with_path(path, err, prefix):
    text = str(err)
    return text if path in text else prefix.format(path) + text


def _one_line(err):
    text = str(err).splitlines()[0] if str(err) else ""
    name = {"EOFError": "the data ends early"}.get(type(err).__name__, type(err).__name__)
    return "{} ({})".format(name, text) if text else name


def load_torch_file(path):
    """Return the object ``torch.save`` stored in ``path``, with every tensor as a numpy array.

    Containers keep their type (``OrderedDict`` stays ordered). bfloat16 tensors become float32.
    Raises ``UnsafeCheckpointError`` for anything but tensors and plain data, ``CheckpointError``
    (one line, naming the file) for truncated, empty or malformed files.
    """
    obj, raw_by_key, big_endian = _read(path, keep_data=True)
    try:
        return _replace_refs(obj, lambda ref: _materialize(ref, raw_by_key, big_endian))
    except CheckpointError as e:
        raise CheckpointError(_with_path(path, e, "{}: ")) from None
    except (RecursionError, TypeError) as e:
        raise CheckpointError("{} is malformed: {}".format(path, _one_line(e))) from None


def check_torch_file(path):
    """Raise ``CheckpointError``/``UnsafeCheckpointError`` unless ``path`` is a complete PyTorch checkpoint.

    Parses the pickle with the restricted unpickler, checks that every storage is present with its
    full size (zip records are CRC-checked) and that every tensor lies inside its storage; storages are
    read in chunks and not kept. Returns ``'zip'`` or ``'legacy'``.
    """
    obj, raw_by_key, _ = _read(path, keep_data=False)
    for ref in _collect_refs(obj):
        st = ref.storage
        view_len = st.numel * _itemsize(st.dtype) // _itemsize(ref.dtype)
        numel = math.prod(ref.shape)
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
        if numel and (last >= view_len or numel > view_len):
            raise CheckpointError("{}: tensor {} reaches past its storage {!r}".format(path, list(ref.shape), st.key))
    return torch_file_format(path)


_PLAIN = (str, int, float, bool, bytes, type(None))


def _plain_problem(value, where):
    """Name the first non-plain value inside ``value`` (meta must hold plain Python data only)."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            problem = _plain_problem(v, "{}[{}]".format(where, i))
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            problem = _plain_problem(k, where) or _plain_problem(v, "{}[{!r}]".format(where, k))
            if problem:
                return problem
        return None
    return "{} is a {}".format(where, "tensor" if isinstance(value, np.ndarray) else type(value).__name__)


def read_torch_state_dict(path):
    """Return ``(state_dict, meta)`` from a ``.pth``: ``{'meta': ..., 'state_dict': ...}`` or a bare state dict.

    ``state_dict`` is an ``OrderedDict`` name -> numpy array in file order; ``meta`` is the file's ``meta``
    dict (plain values only: str, int, float, tuples/lists/dicts of those) or None.
    """
    obj = load_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError("{}: expected a dict (a state dict or {{'meta', 'state_dict'}}), got a {}".format(
            path, type(obj).__name__))
    meta = None
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state, meta = obj["state_dict"], obj.get("meta")
        if meta is not None:
            if not isinstance(meta, dict):
                raise CheckpointError("{}: 'meta' is a {}, expected a dict".format(path, type(meta).__name__))
            problem = _plain_problem(meta, "meta")
            if problem:
                raise CheckpointError("{}: {}; meta may only hold plain values (str, int, float, tuples, "
                                      "lists, dicts)".format(path, problem))
    else:
        state = obj
    out = collections.OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError("{}: state dict key {!r} is not a string".format(path, key))
        if not isinstance(value, np.ndarray):
            raise CheckpointError("{}: state dict entry {!r} is a {}, expected a tensor".format(
                path, key, type(value).__name__))
        out[key] = value
    return out, meta
