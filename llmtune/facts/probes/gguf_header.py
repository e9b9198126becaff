"""GGUF header probe, run on the host by the GgufModel fact (python3 stdlib only).

Shipped as text inside the fact's command (``python3 -c SCRIPT PATH``), so it must run on any
python3 >= 3.6 with nothing installed: no syntax past 3.6, no third-party modules.

It reads a GGUF file's header (magic, version, counts, the key/value metadata and the tensor-info
table) and stops where the tensor data begins: the weights, gigabytes of them, are never read.
It only walks the header far enough to find its end; the controller interprets the bytes with
llama.cpp's own ``gguf`` library.

Output: ``key=value`` lines (``path`` as a JSON string, ``size`` of the file in bytes), then
either ``error=REASON``, or ``header_bytes=N``, ``encoding=zlib+base64`` (or ``base64`` where
python3 lacks zlib) and the header's bytes between ``begin`` and ``end`` lines. It always exits 0;
a reason is printed instead of a traceback.
"""

import base64
import json
import os
import struct
import sys

try:
    import zlib
except ImportError:  # CPython can be built without it
    zlib = None

# A tokenizer of 262k tokens with its merges is ~10 MB of header; beyond this it is not a model.
MAX_HEADER = 128 * 1024 * 1024
CHUNK = 1024 * 1024
# Sizes of GGUF's scalar value types (gguf.h: enum gguf_type); 8 is STRING, 9 is ARRAY.
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
LINE = 4096


class Bad(Exception):
    """The file is not a GGUF file this probe can walk; the message says why."""


class Header:
    """The file's first bytes, read on demand in chunks while the walk advances."""

    def __init__(self, handle, size):
        self.handle = handle
        self.size = size
        self.buf = bytearray()
        self.pos = 0
        self.order = "<"

    def need(self, n):
        end = self.pos + n
        if end > self.size:
            raise Bad(
                f"truncated: the header runs past the end of the file (byte {end} of {self.size})"
            )
        if end > MAX_HEADER:
            raise Bad(f"the header is larger than {MAX_HEADER} bytes")
        while len(self.buf) < end:
            chunk = self.handle.read(max(CHUNK, end - len(self.buf)))
            if not chunk:
                raise Bad("truncated: the file ended while reading its header")
            self.buf += chunk

    def skip(self, n):
        self.need(n)
        self.pos += n

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        self.need(size)
        values = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def count(self, what):
        """A u64 count of items that take a byte or more each, checked against the file size."""
        (n,) = self.unpack("Q")
        if n > self.size:
            raise Bad(f"corrupt header: {what} of {n} is larger than the file")
        return n

    def skip_string(self):
        self.skip(self.count("a string length"))

    def skip_value(self, vtype):
        if vtype in SCALAR_SIZES:
            self.skip(SCALAR_SIZES[vtype])
        elif vtype == STRING:
            self.skip_string()
        elif vtype == ARRAY:
            (item_type,) = self.unpack("I")
            n = self.count("an array length")
            if item_type in SCALAR_SIZES:
                self.skip(n * SCALAR_SIZES[item_type])
            else:
                for _ in range(n):
                    self.skip_value(item_type)
        else:
            raise Bad(f"corrupt header: unknown value type {vtype}")


def walk(header):
    """Advance over the whole header; return where it ends (the tensor data starts after it,
    aligned)."""
    if header.size < 8:
        raise Bad(f"not a GGUF file (it has {header.size} bytes)")
    header.need(4)
    magic = bytes(header.buf[:4])
    if magic != b"GGUF":
        raise Bad(f"not a GGUF file (it starts with {magic!r})")
    header.pos = 4
    (version,) = header.unpack("I")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        header.order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, 3):
        raise Bad(f"unsupported GGUF version {version}")
    n_tensors = header.count("the tensor count")
    n_kv = header.count("the key/value count")
    for _ in range(n_kv):
        header.skip_string()
        (vtype,) = header.unpack("I")
        header.skip_value(vtype)
    for _ in range(n_tensors):
        header.skip_string()
        (n_dims,) = header.unpack("I")
        header.skip(8 * n_dims + 4 + 8)  # dims, type, offset
    return header.pos


def main(path):
    print("path=" + json.dumps(path))
    if not path:
        print("error=no model path given")
        return
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            print(f"size={size}")
            header = Header(handle, size)
            end = walk(header)
    except Bad as exc:
        print(f"error={exc}")
        return
    except OSError as exc:
        print(f"error=cannot read the file: {exc.strerror or exc}")
        return
    data = bytes(header.buf[:end])
    print(f"header_bytes={len(data)}")
    if zlib is not None:
        data = zlib.compress(data, 6)
        print("encoding=zlib+base64")
    else:
        print("encoding=base64")
    text = base64.b64encode(data).decode("ascii")
    print("begin")
    for start in range(0, len(text), LINE):
        print(text[start : start + LINE])
    print("end")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("error=usage: gguf_header.py PATH")
    else:
        main(sys.argv[1])
