"""st_check.py IN OUT: the Python side of test_safetensors.c's cross-check.

IN was written by the C writer (st_write). This script parses it by hand (struct + json), checks the layout
(8-byte aligned header padded with spaces, metadata first, tensors contiguous in the C order) and the values
of the tensors whose contents both sides know (including numpy's float16 rounding against the C converter),
then writes OUT with safetensors_np.save: copies and conversions that the C test reads back and checks.
Exits non-zero with a message on the first mismatch.
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import BF16, f32_to_bf16, load, load_metadata, save  # noqa: E402

# Must match SPECIAL in tests/test_safetensors.c.
SPECIAL = np.array([0.0, -0.0, 1.0, -2.0, 0.1, 3.14159265, 65504.0, 65519.0, 65520.0, 1e-5, 6e-8, 2.9e-8, 1e-9,
                    np.inf, -np.inf, np.nan, 1.00048828125, 1.00146484375, -7.5e-5, 1e30], dtype=np.float32)


def fail(msg):
    print(f"st_check.py: {msg}")
    sys.exit(1)


def main(inp, out):
    np.seterr(over="ignore")  # float16 casts of large values overflow to infinity on purpose
    buf = open(inp, "rb").read()
    (n,) = struct.unpack("<Q", buf[:8])
    if n % 8:
        fail(f"header length {n} is not a multiple of 8")
    text = buf[8:8 + n].decode("utf-8")
    if len(text) - len(text.rstrip(" ")) > 7 or text.rstrip(" ") != text.rstrip():
        fail("header padding is not at most 7 spaces")
    header = json.loads(text)
    keys = list(header)
    want_keys = ["__metadata__", "w.f32", "h.f16", "b.bf16", "i.i64", "u.u8", "s.scalar", "e.empty"]
    if keys != want_keys:
        fail(f"header keys {keys}, expected {want_keys}")
    if header["__metadata__"] != {"format": "pt", "note": 'h\u00e9llo "quoted"\n'}:
        fail(f"metadata {header['__metadata__']}")
    off = 0
    for k in keys[1:]:
        b, e = header[k]["data_offsets"]
        if b != off:
            fail(f"tensor {k} starts at {b}, expected {off} (contiguous)")
        off = e
    if 8 + n + off != len(buf):
        fail(f"data section ends at {8 + n + off}, file has {len(buf)} bytes")

    t = load(inp)
    u16 = load(inp, bf16="uint16")
    if load_metadata(inp)["format"] != "pt":
        fail("load_metadata")
    w = t["w.f32"]
    if w.shape != (3, 5, 2) or w.dtype != np.float32:
        fail(f"w.f32 is {w.dtype} {w.shape}")
    want16 = SPECIAL.astype(np.float16).view(np.uint16)
    got16 = t["h.f16"].view(np.uint16)
    if not np.array_equal(got16, want16):
        bad = np.nonzero(got16 != want16)[0]
        fail(f"F16 from C differs from numpy at {bad}: C {got16[bad]} numpy {want16[bad]} for {SPECIAL[bad]}")
    if not np.array_equal(u16["b.bf16"], f32_to_bf16(SPECIAL)):
        fail(f"BF16 from C {u16['b.bf16']} differs from {f32_to_bf16(SPECIAL)}")
    if not np.array_equal(t["i.i64"], np.array([-3, 0, 1 << 40, 2**63 - 1], np.int64)):
        fail(f"i.i64 {t['i.i64']}")
    if not np.array_equal(t["u.u8"], np.array([[0, 1, 2], [253, 254, 255]], np.uint8)):
        fail(f"u.u8 {t['u.u8']}")
    if t["s.scalar"].shape != () or t["s.scalar"] != 2.5:
        fail(f"s.scalar {t['s.scalar']!r}")
    if t["e.empty"].shape != (0, 4):
        fail(f"e.empty shape {t['e.empty'].shape}")

    # A wide range of floats, and exact ties between neighbouring halves, for the C converters to match.
    rng = np.random.default_rng(1)
    r = (rng.choice([-1.0, 1.0], 3000) * 2.0 ** rng.uniform(-27, 17, 3000)).astype(np.float32)
    h = rng.integers(0, 0x7BFF, 1000).astype(np.uint16)
    ties = ((h.view(np.float16).astype(np.float64) + (h + 1).view(np.float16).astype(np.float64)) / 2)
    r = np.concatenate([r, ties.astype(np.float32)])
    save(out, {
        "w.f32": w,
        "w.neg": -w,
        "w.f16": w.astype(np.float16),
        "w.bf16": BF16(w),
        "i.i64": t["i.i64"],
        "r.f32": r,
        "r.f16": r.astype(np.float16),
        "r.bf16": BF16(r),
    }, metadata={"from": "python"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
