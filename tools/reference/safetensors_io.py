"""Minimal hand-written reader/writer for the safetensors format.

Layout of a file:
  * 8 bytes: little-endian uint64 N, the length of the JSON header;
  * N bytes: UTF-8 JSON object mapping tensor name -> {"dtype", "shape", "data_offsets"},
    plus an optional "__metadata__" object of string -> string; the header is padded with
    spaces so that the data section starts at a multiple of 8;
  * the data section: raw little-endian tensor data; "data_offsets" = [begin, end) are
    relative to the start of the data section.

Supported dtypes: F32, F16, BF16, I32, I64. Tensors are read back as torch tensors with
their stored dtype (BF16 -> torch.bfloat16); no third-party safetensors package is used.
"""

import json
import struct

import numpy as np
import torch

# safetensors dtype name -> (torch dtype, numpy dtype used for the raw bytes)
_DTYPES = {
    "F32": (torch.float32, np.dtype("<f4")),
    "F16": (torch.float16, np.dtype("<f2")),
    "BF16": (torch.bfloat16, np.dtype("<i2")),  # numpy has no bf16: raw 16-bit patterns
    "I32": (torch.int32, np.dtype("<i4")),
    "I64": (torch.int64, np.dtype("<i8")),
}
_TORCH_TO_NAME = {v[0]: k for k, v in _DTYPES.items()}


def _to_torch(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(value))


def tensor_bytes(t):
    """Raw little-endian bytes of a torch tensor of a supported dtype."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        # Reinterpret the 16-bit patterns; numpy cannot hold bf16 directly.
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    name = _TORCH_TO_NAME[t.dtype]
    return t.numpy().astype(_DTYPES[name][1], copy=False).tobytes()


def save_file(tensors, path, dtypes=None, metadata=None):
    """Write `tensors` (dict name -> torch tensor or numpy array) to `path`.

    dtypes: optional dict name -> "F32"|"F16"|"BF16"|"I32"|"I64"; a tensor named there is
    converted first (float -> BF16/F16 rounds to nearest even, as torch's .to() does).
    Tensors without an entry keep their own dtype, which must be supported (float64 is
    stored as F32 and other integer types as I64 for convenience).
    Tensors are written in the order of the dict.
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        t = _to_torch(value)
        if name in dtypes:
            t = t.to(_DTYPES[dtypes[name]][0])
        elif t.dtype == torch.float64:
            t = t.to(torch.float32)
        elif t.dtype in (torch.int8, torch.int16, torch.uint8, torch.bool):
            t = t.to(torch.int64)
        if t.dtype not in _TORCH_TO_NAME:
            raise ValueError(f"unsupported dtype {t.dtype} for tensor {name}")
        data = tensor_bytes(t)
        header[name] = {
            "dtype": _TORCH_TO_NAME[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)  # data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for data in blobs:
            f.write(data)
    return offset  # total bytes of tensor data


def read_header(path):
    """Return (header dict without __metadata__, metadata dict, data section start)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    return header, metadata, 8 + n


def load_file(path, names=None):
    """Read tensors from `path` as a dict name -> torch tensor (stored dtype).

    names: optional iterable restricting which tensors are read.
    """
    header, _, start = read_header(path)
    wanted = set(header) if names is None else set(names)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name not in wanted:
                continue
            tdtype, ndtype = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            shape = info["shape"]
            count = int(np.prod(shape)) if shape else 1
            if end - begin != count * ndtype.itemsize:
                raise ValueError(f"{path}: tensor {name}: size mismatch")
            f.seek(start + begin)
            arr = np.frombuffer(f.read(end - begin), dtype=ndtype).reshape(shape)
            t = torch.from_numpy(arr.copy())
            if info["dtype"] == "BF16":
                t = t.view(torch.bfloat16)
            out[name] = t
    return out
