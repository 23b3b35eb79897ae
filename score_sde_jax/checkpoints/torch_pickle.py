"""Reads PyTorch checkpoint files (`torch.save` output) without torch and without running code.

A `.pth` file is a pickle whose tensors point at raw storages kept beside it: in the zip format
(torch >= 1.6) ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record per storage; in
the legacy format (torch < 1.6, e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) a
run of pickles followed by the raw storages. Unpickling normally imports and calls whatever the
file names, so a checkpoint from an untrusted source could run arbitrary code. `load_pth`
instead resolves every global through an allow-list of the few callables `torch.save` emits for
tensors and plain containers, each replaced by a local function that only builds numpy arrays;
any other global raises `UnsafeCheckpointError` before anything is called.
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from score_sde_jax.errors import InputError, UserError

__all__ = ["TorchCheckpointError", "UnsafeCheckpointError", "load_pth"]


class TorchCheckpointError(UserError, ValueError):
    """The file is not a readable PyTorch checkpoint (wrong format, truncated or corrupt)."""

    default_fix = "see docs/checkpoints.md"


class UnsafeCheckpointError(TorchCheckpointError):
    """The pickle references a global outside the allow-list (it could run code if trusted)."""


# Element types of torch's typed storages (the names `torch.save` writes), also as
# `torch.cuda.*` for legacy files saved from a GPU.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

# numpy scalar types that may appear as plain values (the PyTorch port of score_sde stores its
# learning rate as numpy.float64); keys are the type codes numpy pickles.
_NUMPY_SCALAR_CODES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)

# `torch.save`'s legacy format starts with this number, pickled (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands in for a `torch.*Storage` class; only ever used as a tag in storage records."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage's elements (1-D, native byte order); `data` is None while only scanning."""

    dtype: np.dtype
    data: np.ndarray | None


class _NumpyDType:
    """Stands in for `numpy.dtype(code)` until BUILD supplies the byte order."""

    def __init__(self, code):
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state):
        # numpy pickles (version, byteorder, subdtype, names, fields, elsize, alignment, flags).
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise UnsafeCheckpointError(f"unexpected numpy dtype state {state!r}")
        self.byteorder = state[1]


def _numpy_dtype(code, align=False, copy=True):
    del align, copy  # numpy's own flags for the constructor call; irrelevant for scalars
    if code not in _NUMPY_SCALAR_CODES:
        raise UnsafeCheckpointError(
            f"numpy dtype {code!r} is not allowed; allowed: {sorted(_NUMPY_SCALAR_CODES)}"
        )
    return _NumpyDType(code)


def _numpy_scalar(dtype, data):
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise UnsafeCheckpointError("numpy scalar record with unexpected arguments")
    dt = np.dtype(dtype.byteorder + dtype.code)
    if len(data) != dt.itemsize:
        raise TorchCheckpointError(
            f"numpy {dt} scalar holds {len(data)} bytes, expected {dt.itemsize}"
        )
    return np.frombuffer(data, dt).astype(dt.newbyteorder("="))[0]


def _latin1_encode(text, encoding):
    # Pickle protocol 2 stores `bytes` as _codecs.encode(str, 'latin1'); nothing else is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(
            f"_codecs.encode called with {type(text).__name__}, {encoding!r}"
        )
    return text.encode("latin1")


def _tensor(storage, storage_offset, size, stride):
    """numpy copy of the strided view that a torch tensor takes of its storage."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("tensor record without a storage")
    if not isinstance(size, tuple | list) or not isinstance(stride, tuple | list):
        raise TorchCheckpointError(f"bad tensor record: size {size!r}, stride {stride!r}")
    fields = (storage_offset, *size, *stride)
    if (
        len(size) != len(stride)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in fields)
        or min(fields) < 0
    ):
        raise TorchCheckpointError(
            f"bad tensor record: offset {storage_offset!r}, size {size!r}, stride {stride!r}"
        )
    if storage.data is None:
        return None
    size, stride = tuple(size), tuple(stride)
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.data.size:
        raise TorchCheckpointError(
            f"tensor of size {size} (offset {storage_offset}, stride {stride}) reads past its "
            f"storage of {storage.data.size} elements: the file is corrupt"
        )
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[storage_offset:],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    if view.size > storage.data.size:
        # Zero strides (an expanded tensor): a copy could be arbitrarily large, keep the view.
        return view
    return np.array(view, order="C")


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    del requires_grad, backward_hooks, metadata  # autograd bookkeeping, meaningless for arrays
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    del requires_grad, backward_hooks
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    del requires_grad, backward_hooks, state
    return data


def _torch_size(dims):
    dims = tuple(dims)
    if not all(isinstance(d, int) for d in dims):
        raise TorchCheckpointError(f"torch.Size with non-integer entries {dims!r}")
    return dims


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("torch", "torch.cuda"):
    for _name, _dtype in _STORAGE_DTYPES.items():
        _ALLOWED_GLOBALS[(_module, _name)] = _StorageType(_name, _dtype)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from `_ALLOWED_GLOBALS`.

    `storage_loader(storage_type, key, numel)` returns the `_Storage` of a persistent record.
    """

    def __init__(self, file, storage_loader=None):
        super().__init__(file)
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load global '{module}.{name}': a checkpoint should contain only "
                "tensors, numbers, strings and plain containers, and this global could run code. "
                "If you trust the file, load it with torch (weights_only=False) and re-save a "
                "plain state_dict with torch.save."
            ) from None

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata.
        if (
            not isinstance(pid, tuple)
            or len(pid) not in (5, 6)
            or pid[0] != "storage"
            or self._storage_loader is None
        ):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(f"refusing persistent record of kind {kind!r}")
        storage_type, key, location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(location, str)
            or not isinstance(numel, int)
            or numel < 0
        ):
            raise TorchCheckpointError(f"bad storage record {pid!r}")
        storage = self._storage_loader(storage_type, key, numel)
        if view is None:
            return storage
        # Legacy files may reference a slice of a storage: (view_key, offset, size) in elements.
        if not isinstance(view, tuple) or len(view) != 3:
            raise TorchCheckpointError(f"bad storage view {view!r}")
        _, offset, size = view
        if not all(isinstance(v, int) and v >= 0 for v in (offset, size)):
            raise TorchCheckpointError(f"bad storage view {view!r}")
        data = None if storage.data is None else storage.data[offset : offset + size]
        return _Storage(storage.dtype, data)


def _unpickle(data: bytes, storage_loader=None):
    return _RestrictedUnpickler(io.BytesIO(data), storage_loader).load()


def _zip_prefix(names):
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise TorchCheckpointError(
            "zip archive without a single '<name>/data.pkl': not a file written by torch.save"
        )
    prefix = pkls[0][: -len("data.pkl")]
    if any(n.startswith(prefix + "code/") for n in names) or prefix + "constants.pkl" in names:
        raise TorchCheckpointError(
            "this is a TorchScript archive (torch.jit.save), which holds code; save the weights "
            "with torch.save(model.state_dict(), path) instead"
        )
    return prefix


def _load_zip(path):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise TorchCheckpointError(
            f"{path}: the zip archive is truncated or corrupt ({err}); download it again"
        ) from None
    with archive:
        names = archive.namelist()
        prefix = _zip_prefix(names)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchCheckpointError(f"unknown byte order {byteorder!r}")
        order = "<" if byteorder == "little" else ">"
        storages = {}

        def load_storage(storage_type, key, numel):
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise TorchCheckpointError(f"storage record {record!r} is missing")
                dtype = storage_type.dtype
                nbytes = numel * dtype.itemsize
                # Checked before reading, so that a forged record cannot inflate into memory.
                if archive.getinfo(record).file_size != nbytes:
                    raise TorchCheckpointError(
                        f"storage {record!r} has {archive.getinfo(record).file_size} bytes, "
                        f"expected {nbytes}: the file is corrupt"
                    )
                data = np.frombuffer(archive.read(record), dtype.newbyteorder(order))
                storages[key] = _Storage(dtype, data.astype(dtype))
            return storages[key]

        try:
            return _unpickle(archive.read(prefix + "data.pkl"), load_storage)
        except zipfile.BadZipFile as err:
            raise TorchCheckpointError(
                f"{path}: a zip record is corrupt ({err}); download the file again"
            ) from None


def _load_legacy(path):
    with open(path, "rb") as f:
        unpickler = _RestrictedUnpickler(f)
        magic = unpickler.load()
        if magic != _LEGACY_MAGIC:
            raise TorchCheckpointError("not a PyTorch checkpoint (no torch.save magic number)")
        protocol = unpickler.load()
        sys_info = unpickler.load()
        if protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise TorchCheckpointError(f"unsupported legacy torch.save protocol {protocol!r}")
        if not sys_info.get("little_endian", True):
            raise TorchCheckpointError("big-endian legacy torch files are not supported")
        # The storages follow the main pickle, so it is read twice: first to learn each
        # storage's element type (tensors come out as None), then with the data in hand.
        start = f.tell()
        dtypes = {}

        def scan_storage(storage_type, key, numel):
            dtypes[key] = storage_type.dtype
            return _Storage(storage_type.dtype, None)

        _RestrictedUnpickler(f, scan_storage).load()
        end = f.tell()
        f.seek(start)
        pickled = f.read(end - start)
        keys = _RestrictedUnpickler(f).load()
        if not isinstance(keys, list) or set(keys) != set(dtypes):
            raise TorchCheckpointError("legacy storage key list does not match the tensors")
        storages = {}
        size = os.fstat(f.fileno()).st_size
        for key in keys:
            header = f.read(8)
            if len(header) < 8:
                raise TorchCheckpointError(f"{path}: file is truncated; download it again")
            (numel,) = struct.unpack("<q", header)
            dtype = dtypes[key]
            if numel < 0 or f.tell() + numel * dtype.itemsize > size:
                raise TorchCheckpointError(f"{path}: file is truncated; download it again")
            raw = f.read(numel * dtype.itemsize)
            storages[key] = _Storage(
                dtype, np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
            )

    def load_storage(storage_type, key, numel):
        if key not in storages or storages[key].data.size < numel:
            raise TorchCheckpointError(f"storage {key!r} is missing or too short")
        return storages[key]

    return _unpickle(pickled, load_storage)


def load_pth(path):
    """Reads a `torch.save` file into plain Python containers with `np.ndarray` leaves.

    Tensors become C-contiguous numpy arrays in native byte order (bfloat16 via `ml_dtypes`);
    dicts, OrderedDicts, lists, tuples, numbers, strings and numpy scalars are returned as such.
    Both the zip format (torch >= 1.6) and the legacy format are understood. Nothing from the
    file is imported or executed: see the module docstring.

    Args:
      path: the `.pth`/`.pt` file.

    Returns:
      The unpickled object, e.g. a state_dict ``{name: np.ndarray}`` or a training checkpoint.

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the pickle references a global outside the allow-list.
      TorchCheckpointError: not a torch.save file, truncated or corrupt.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"No PyTorch checkpoint at {path!r}", "check the path")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        loader = _load_zip
    elif head.startswith(b"\x80"):
        loader = _load_legacy
    else:
        raise TorchCheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor the legacy "
            "format)"
        )
    try:
        return loader(path)
    except TorchCheckpointError as err:
        if path in str(err):
            raise
        raise type(err)(f"{path}: {err}") from None
    except Exception as err:  # a damaged or foreign pickle can fail in many ways
        raise TorchCheckpointError(
            f"{path}: not a readable PyTorch checkpoint, or truncated/corrupt "
            f"({type(err).__name__}: {err})"
        ) from None
