"""Model facts: what a GGUF file holds, read from its metadata without loading the weights.

- ``GgufModel``: a GGUF file on the host (architecture, file type, the hyperparameters that size
  the KV cache and the layers, tensor bytes in total and in experts).

The host may have neither numpy nor the ``gguf`` library, so the work is split: a stdlib probe
(``probes/gguf_header.py``) reads the header on the host, stopping where the tensor data begins,
and ships its bytes back; ``process()`` gives them to ``gguf.GGUFReader`` (llama.cpp's own reader)
through a temporary sparse file of the real file's size. The reader memory-maps a path and takes
the tensor data as views it never reads, so the holes cost neither disk nor time, and every field
is interpreted by the same code that wrote it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any

import gguf

from llmtune.facts.probe import LlmtuneFact, c_locale, parse_tool, tool

# Bytes per element of the KV cache types the planner chooses between (q8_0: 34-byte blocks of
# 32 values; q4_0: 18-byte blocks of 32).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class GgufModelValue:
    """Example (the synthetic 8B of the measured anchors)::

    GgufModelValue(available=True, path="/srv/models/llama8b-q4_k_m.gguf",
                   file_bytes=4368445280, architecture="llama", name="llama8b",
                   file_type="Q4_K_M", block_count=32, context_length=8192,
                   embedding_length=4096, feed_forward_length=14336, head_count=32,
                   head_count_kv=8, key_length=128, value_length=128, expert_count=0,
                   expert_used_count=0, nextn_predict_layers=0, vocab_size=32000,
                   tensor_bytes=4367704064, expert_tensor_bytes=0)

    ``available`` is False, with ``reason``, when the file is missing, unreadable or not GGUF.
    """

    available: bool
    reason: str = ""
    path: str = ""
    file_bytes: int = 0
    architecture: str = ""
    name: str = ""
    # general.file_type as llama.cpp names it ("Q4_K_M", "F16"); "" when the file does not say.
    file_type: str = ""
    block_count: int = 0
    context_length: int = 0
    embedding_length: int = 0
    # Per-layer values stored as arrays (OpenELM, hybrid attention/recurrent models) read as
    # their largest element here.
    feed_forward_length: int = 0
    head_count: int = 0
    head_count_kv: int = 0
    # Per-head K and V sizes (attention.key_length / value_length, else embedding / heads).
    key_length: int = 0
    value_length: int = 0
    # Mixture of experts: experts per layer and used per token (0 for a dense model).
    expert_count: int = 0
    expert_used_count: int = 0
    # Multi-token-prediction layers the model carries (0: none; MTP speculative decoding needs >0).
    nextn_predict_layers: int = 0
    vocab_size: int = 0
    # Sum of every tensor's data size, and the part in expert FFN tensors (*_exps), which
    # --n-cpu-moe keeps in RAM.
    tensor_bytes: int = 0
    expert_tensor_bytes: int = 0
    # head_count_kv per layer where the file stores it per layer (0 for a layer without
    # attention, e.g. a recurrent one); () where it is one number for all layers.
    head_count_kv_per_layer: tuple[int, ...] = ()
    # split.count of a model split over several files (this file holds only its share of the
    # tensors: tensor_bytes counts those); 0 for a single file.
    split_count: int = 0

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 0

    def kv_bytes_per_token(self, type_k: str = "f16", type_v: str = "f16") -> float:
        """KV cache bytes one token of context takes over all layers."""
        if self.head_count_kv_per_layer:
            kv_heads = sum(self.head_count_kv_per_layer)
        else:
            kv_heads = self.block_count * self.head_count_kv
        return kv_heads * (
            self.key_length * KV_TYPE_BYTES[type_k] + self.value_length * KV_TYPE_BYTES[type_v]
        )


def probe_script() -> str:
    """The probe's source, shipped inside the command (the host needs only python3)."""
    return resources.files("llmtune.facts").joinpath("probes/gguf_header.py").read_text()


@dataclass(frozen=True)
class ProbeOutput:
    """The probe's lines: its ``key=value`` lines and the header bytes, if it sent them."""

    values: dict[str, str]
    header: bytes | None = None
    # Why the header could not be decoded ("" when it was, or when none was sent).
    damaged: str = ""

    @property
    def path(self) -> str:
        try:
            path = json.loads(self.values.get("path", '""'))
        except ValueError:
            return ""
        return path if isinstance(path, str) else ""

    @property
    def size(self) -> int:
        size = self.values.get("size", "")
        return int(size) if size.isdigit() else 0


def parse_probe(lines: Sequence[str]) -> ProbeOutput:
    """Parse ``probes/gguf_header.py``'s output (see its docstring for the format)."""
    values: dict[str, str] = {}
    payload: list[str] | None = None
    ended = False
    for line in lines:
        if payload is not None and not ended:
            if line == "end":
                ended = True
            else:
                payload.append(line.strip())
        elif line == "begin":
            payload = []
        elif "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    if payload is None:
        return ProbeOutput(values)
    if not ended:
        return ProbeOutput(values, damaged="the probe's output was cut short")
    try:
        data = base64.b64decode("".join(payload), validate=True)
        if values.get("encoding", "").startswith("zlib"):
            data = zlib.decompress(data)
    except (binascii.Error, zlib.error) as exc:
        return ProbeOutput(values, damaged=f"the probe's output is damaged ({exc})")
    expected = values.get("header_bytes", "")
    if not expected.isdigit() or int(expected) != len(data):
        return ProbeOutput(
            values, damaged=f"got {len(data)} header bytes, the probe sent {expected}"
        )
    return ProbeOutput(values, header=data)


def _reader(header: bytes, size: int) -> gguf.GGUFReader:
    """``gguf.GGUFReader`` over ``header`` in a sparse file of ``size`` bytes.

    The file is unlinked as soon as the reader has mapped it (the map keeps it alive), so
    nothing is left behind, whatever the reader raises.
    """
    with tempfile.NamedTemporaryFile(prefix="llmtune-gguf-", suffix=".gguf") as handle:
        handle.write(header)
        handle.flush()
        os.truncate(handle.name, max(size, len(header)))
        return gguf.GGUFReader(handle.name)


_GGUF_VERSION = metadata.version("gguf")
# The enum's error for a tensor type it lacks: "np.uint32(42) is not a valid GGMLQuantizationType".
_UNKNOWN_TYPE = re.compile(r"(\d+)\)? is not a valid GGMLQuantizationType")

# Big enough for any tensor offset a real file has, small enough for every Linux file system's
# largest sparse file: the second read of a truncated file, to say where its data should end.
_RETRY_SIZE = 1 << 42


def read_header(header: bytes, size: int) -> tuple[gguf.GGUFReader | None, str]:
    """The reader over the header of a file of ``size`` bytes, or None and why it failed.

    A truncated file (an interrupted download) fails in the reader, whose tensor views then run
    past the end; read again with room to spare, it says how long the file should be.
    """
    try:
        return _reader(header, size), ""
    except Exception as exc:  # the reader raises what numpy raises on a bad header
        if m := _UNKNOWN_TYPE.search(str(exc)):  # llama.cpp is ahead of the library
            return None, (
                f"tensor type {m[1]} is unknown to gguf {_GGUF_VERSION}: the file is newer than"
                " the gguf library; a newer gguf reads it"
            )
        first = f"not a valid GGUF file ({type(exc).__name__}: {exc})"
    try:
        spare = _reader(header, _RETRY_SIZE)
    except Exception:
        return None, first
    end = max((t.data_offset + t.n_bytes for t in spare.tensors), default=0)
    if end > size:
        return None, f"truncated: the tensor data ends at byte {end}, the file has {size} bytes"
    return None, first


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _ints(value: Any) -> tuple[int, ...]:
    """An integer key's value as a tuple: one element for a scalar, one per layer for an array."""
    if isinstance(value, bool) or value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def _int(value: Any) -> int:
    return max(_ints(value), default=0)


def file_type_name(value: Any) -> str:
    """general.file_type as llama-quantize names it: 15 -> "Q4_K_M", 1 -> "F16", 0 -> "F32"."""
    if not isinstance(value, int):
        return ""
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:  # newer than the gguf library
        return f"unknown ({value})"
    if name == "GUESSED":
        return ""
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def model_value(reader: gguf.GGUFReader, path: str, size: int) -> GgufModelValue:
    """Fill the value from the reader's fields and tensor table."""
    arch = _field(reader, gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str) or not arch:
        return GgufModelValue(False, "no general.architecture", path=path, file_bytes=size)

    def key(name: str) -> Any:
        return _field(reader, name.format(arch=arch))

    llm, att = gguf.Keys.LLM, gguf.Keys.Attention
    embd, heads = _int(key(llm.EMBEDDING_LENGTH)), _int(key(att.HEAD_COUNT))
    per_head = embd // heads if heads else 0
    kv_layers = _ints(key(att.HEAD_COUNT_KV))
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    name = _field(reader, gguf.Keys.General.NAME)
    return GgufModelValue(
        available=True,
        path=path,
        file_bytes=size,
        architecture=arch,
        name=name if isinstance(name, str) else "",
        file_type=file_type_name(_field(reader, gguf.Keys.General.FILE_TYPE)),
        block_count=_int(key(llm.BLOCK_COUNT)),
        context_length=_int(key(llm.CONTEXT_LENGTH)),
        embedding_length=embd,
        feed_forward_length=_int(key(llm.FEED_FORWARD_LENGTH)),
        head_count=heads,
        # llama.cpp: head_count_kv defaults to head_count (no GQA).
        head_count_kv=max(kv_layers, default=heads),
        key_length=_int(key(att.KEY_LENGTH)) or per_head,
        value_length=_int(key(att.VALUE_LENGTH)) or per_head,
        expert_count=_int(key(llm.EXPERT_COUNT)),
        expert_used_count=_int(key(llm.EXPERT_USED_COUNT)),
        nextn_predict_layers=_int(key(llm.NEXTN_PREDICT_LAYERS)),
        vocab_size=len(tokens.data) if tokens is not None else _int(key(llm.VOCAB_SIZE)),
        tensor_bytes=sum(t.n_bytes for t in reader.tensors),
        expert_tensor_bytes=sum(t.n_bytes for t in reader.tensors if "_exps" in t.name),
        head_count_kv_per_layer=kv_layers if len(kv_layers) > 1 else (),
        split_count=_int(_field(reader, gguf.Keys.Split.LLM_KV_SPLIT_COUNT)),
    )


class GgufModel(LlmtuneFact[GgufModelValue]):
    """A GGUF model file on the host, read from its header (the weights are not read)."""

    # The header of a big vocabulary is megabytes, over the network.
    timeout_s = 30.0

    def command(self, path: str = "") -> str:
        script = shlex.quote(probe_script())
        return c_locale(tool("python3", f"python3 -c {script} {shlex.quote(path)}"))

    def process(self, output: list[str]) -> GgufModelValue:
        if not output:
            return GgufModelValue(False, "no output")
        run = parse_tool(output)
        if run.missing:
            return GgufModelValue(False, "python3 is not installed on the host")
        probe = parse_probe(run.lines)
        path, size = probe.path, probe.size
        if run.rc is None:  # no exit status: timed out, or the connection dropped
            return GgufModelValue(False, "the probe did not finish", path=path, file_bytes=size)
        if run.rc != 0:
            # A traceback's last line says what went wrong; the first says only "Traceback".
            last = next((x.strip() for x in reversed(run.lines) if x.strip()), "")
            reason = f"the probe exited {run.rc}" + (f": {last}" if last else "")
            return GgufModelValue(False, reason, path=path, file_bytes=size)
        if "error" in probe.values:
            return GgufModelValue(False, probe.values["error"], path=path, file_bytes=size)
        if probe.header is None:
            reason = probe.damaged or "the probe printed no header"
            return GgufModelValue(False, reason, path=path, file_bytes=size)
        reader, reason = read_header(probe.header, size)
        if reader is None:
            return GgufModelValue(False, reason, path=path, file_bytes=size)
        return model_value(reader, path, size)
