"""safetensors_np: a tiny pure-numpy reader/writer of the safetensors format, for the test oracles.

Format: 8 bytes N (u64 little-endian), N bytes of JSON {name: {"dtype", "shape", "data_offsets": [b, e]},
"__metadata__": {str: str}}, then the data section (offsets relative to its start), row-major little-endian.

    from safetensors_np import load, save, load_metadata, BF16
    tensors = load("model.safetensors")            # dict name -> np.ndarray (BF16 widened to float32)
    save("out.safetensors", {"w": np.zeros((2, 3), np.float32), "h": BF16(x)}, metadata={"format": "pt"})

save() also accepts torch tensors (converted on the CPU; torch.bfloat16 is stored as BF16).
"""
import json
import os
import struct

import numpy as np

__all__ = ["load", "load_metadata", "save", "BF16", "bf16_to_f32", "f32_to_bf16"]

# dtype name -> numpy dtype (little-endian); BF16 is read as raw uint16.
_NP = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_NAME = {np.dtype(v): k for k, v in _NP.items() if k != "BF16"}  # numpy dtype -> name (uint16 is U16)


def bf16_to_f32(u16):
    """uint16 bit patterns -> float32 (exact)."""
    u = np.asarray(u16, dtype=np.uint16)
    return (u.reshape(-1).astype(np.uint32) << np.uint32(16)).view(np.float32).reshape(u.shape)


def f32_to_bf16(x):
    """float32 -> uint16 bfloat16 bit patterns, rounded to nearest even; NaN stays a quiet NaN."""
    x = np.asarray(x, dtype=np.float32)
    b = x.reshape(-1).view(np.uint32).astype(np.uint64)
    r = (b + np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    r = np.where(np.isnan(x.reshape(-1)), (b >> np.uint64(16)) | np.uint64(0x40), r)
    return r.astype(np.uint16).reshape(x.shape)


class BF16:
    """Marks an array to be stored as BF16: float values (rounded) or, with bits=True, uint16 bit patterns."""

    def __init__(self, array, bits=False):
        a = np.asarray(array)
        self.u16 = a.astype(np.uint16) if bits else f32_to_bf16(a.astype(np.float32))


def _read(path):
    with open(path, "rb") as fh:
        buf = fh.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: {len(buf)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > len(buf) - 8:
        raise ValueError(f"{path}: header says {n} bytes but the file has {len(buf) - 8} after the length")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    return header, memoryview(buf)[8 + n:]


def load_metadata(path):
    """The "__metadata__" dict of the file ({} if absent)."""
    header, _ = _read(path)
    return dict(header.get("__metadata__", {}))


def load(path, bf16="float32"):
    """All tensors of the file as a dict name -> np.ndarray (copies, in header order). BF16 tensors come back
    widened to float32, or as their raw uint16 bits with bf16="uint16"."""
    header, data = _read(path)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (b, e) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dt not in _NP:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dt}")
        npdt = np.dtype(_NP[dt])
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= b <= e <= len(data)) or e - b != count * npdt.itemsize:
            raise ValueError(f"{path}: tensor '{name}' has bad data_offsets [{b}, {e}] for {dt} {list(shape)}")
        a = np.frombuffer(data[b:e], dtype=npdt, count=count).reshape(shape).copy()
        if dt == "BF16" and bf16 == "float32":
            a = bf16_to_f32(a).reshape(shape)
        out[name] = a
    return out


def _as_numpy(v):
    """(dtype name, contiguous little-endian array) for a numpy array, a BF16 wrapper or a torch tensor."""
    if isinstance(v, BF16):
        return "BF16", v.u16
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor, without importing torch here
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            import torch
            return "BF16", v.contiguous().view(torch.int16).numpy().view(np.uint16)
        v = v.numpy()
    a = np.asarray(v)
    key = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if key not in _NAME:
        raise TypeError(f"cannot store dtype {a.dtype} in safetensors_np")
    return _NAME[key], np.asarray(a, dtype=key, order="C")


def save(path, tensors, metadata=None):
    """Writes dict name -> array to path: "__metadata__" first (if given; str -> str), then the tensors in
    the dict's order, contiguous, the header padded with spaces to 8 bytes. Written to a temporary file and
    renamed, like the C writer."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, v in tensors.items():
        dt, a = _as_numpy(v)
        raw = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for raw in blobs:
            fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
