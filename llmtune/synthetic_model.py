"""Synthetic GGUF models: real llama.cpp architectures with random weights, made by the project.

No model can be downloaded where llmtune is developed and tested, and a benchmark does not need
a trained one: llama.cpp does the same work per token for random weights as for trained weights
of the same shape and type, so prompt and generation speed, memory use and the planner's anchors
measured on these files hold for the real model of that shape. Only the text is gibberish.

Shapes (``params``: every tensor's elements; ``tensor bytes``: their data at the shape's type,
without the header)::

    shape     arch      layers  n_embd  n_ff   heads/kv  head  experts/used/ff  vocab   n_ctx  type
    tiny      llama     2       64      256    4/2       16    -                2048    2048   F32
    tiny-moe  qwen3moe  2       64      256    4/2       16    8/2/64           2048    2048   F32
    llama-8b  llama     32      4096    14336  32/8      128   -                32000   8192   F16
    qwen3moe  qwen3moe  48      2048    6144   32/4      128   128/8/768        151936  40960  F16

    shape     params          tensor bytes
    tiny      385,344         1,541,376
    tiny-moe  484,736         1,938,944
    llama-8b  7,241,732,096   14,483,996,672
    qwen3moe  30,532,122,624  61,089,832,960

- ``tiny`` and ``tiny-moe`` are for CI: a few MB, they load and generate in llama-server in
  well under a second on one CPU core. Their rows of 64 values are below the 256 of the k-quants,
  so ``llama-quantize`` falls back to other types for most of their tensors (it says so).
- ``llama-8b`` is Mistral-7B-v0.1's shape (a Llama-3-8B body with a 32000-token SPM vocabulary):
  14.5 GB at F16. At llama.cpp's Q4_K_M mix its tensor data is 4,367,704,064 bytes: the measured
  anchors' 8B file (4,368,445,280 bytes) less its 741,216-byte header.
- ``qwen3moe`` is Qwen3-30B-A3B's shape, vocabulary size included (so that the output layer
  costs what it costs there): 128 experts of which 8 run per token, 61 GB at F16.

The tokenizer is a llama (SentencePiece-style) vocabulary made here: ``<unk>``, ``<s>``,
``</s>``, the 256 byte tokens ``<0x00>``..``<0xFF>``, then filler pieces (printable ASCII, then
runs of lowercase letters, each also with the ``▁`` word-start mark) up to the vocabulary size,
scored by rank as SentencePiece scores its pieces. Any text tokenizes (bytes are the fallback),
and no vocabulary file is needed.

Big shapes are written fast: weights come from one random pool per type, generated once, and each
tensor is a slice of it (every layer holds the same values), so writing costs what the disk costs.

Usage::

    python -m llmtune.synthetic_model OUT.gguf --shape tiny [--seed N] [--type q8_0]
"""

from __future__ import annotations

import argparse
import itertools
import os
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

import gguf
import numpy as np

MT = gguf.MODEL_TENSOR
QT = gguf.GGMLQuantizationType

# The file types the shapes are written in, and the general.file_type each one declares.
_FILE_TYPES = {
    QT.F32: gguf.LlamaFileType.ALL_F32,
    QT.F16: gguf.LlamaFileType.MOSTLY_F16,
    QT.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}
_NUMPY = {QT.F32: np.float32, QT.F16: np.float16}
# --type: the weight types a shape can be written in. Q8_0 (blocks of 32 values, 8.5 bits each)
# is there for the big shapes: the qwen3moe shape is 61 GB at F16 but 32 GB at Q8_0, so the
# file and llama-quantize's output fit a 64 GB disk together (quantize with --allow-requantize).
TYPES = {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0}
# Standard deviation of the random weights: small enough that activations stay finite through
# the layers (the scale of trained weights, ~1/sqrt(n_embd) for the small shapes).
_WEIGHT_STD = 0.02
# The pool is filled in chunks, so that a 300M-value pool never needs a float64 copy of itself.
_CHUNK = 1 << 24


@dataclass(frozen=True)
class Shape:
    """One model shape: the hyperparameters llama.cpp reads for its architecture."""

    name: str
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    # The weight type of the 2-D tensors; norms (and MoE routers) are always F32.
    dtype: QT
    rope_freq_base: float
    rms_eps: float
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def file_type(self) -> gguf.LlamaFileType:
        return _FILE_TYPES[self.dtype]


# fmt: off
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape(
            name="tiny", arch="llama", n_layer=2, n_embd=64, n_ff=256, n_head=4, n_head_kv=2,
            head_dim=16, n_vocab=2048, n_ctx=2048, dtype=QT.F32, rope_freq_base=1e4, rms_eps=1e-5,
        ),
        Shape(
            name="tiny-moe", arch="qwen3moe", n_layer=2, n_embd=64, n_ff=256, n_head=4,
            n_head_kv=2, head_dim=16, n_vocab=2048, n_ctx=2048, dtype=QT.F32, rope_freq_base=1e6,
            rms_eps=1e-6, n_expert=8, n_expert_used=2, n_ff_exp=64,
        ),
        # Mistral-7B-v0.1's hyperparameters.
        Shape(
            name="llama-8b", arch="llama", n_layer=32, n_embd=4096, n_ff=14336, n_head=32,
            n_head_kv=8, head_dim=128, n_vocab=32000, n_ctx=8192, dtype=QT.F16,
            rope_freq_base=1e4, rms_eps=1e-5,
        ),
        # Qwen3-30B-A3B's config.json (n_ctx: its max_position_embeddings).
        Shape(
            name="qwen3moe", arch="qwen3moe", n_layer=48, n_embd=2048, n_ff=6144, n_head=32,
            n_head_kv=4, head_dim=128, n_vocab=151936, n_ctx=40960, dtype=QT.F16,
            rope_freq_base=1e6, rms_eps=1e-6, n_expert=128, n_expert_used=8, n_ff_exp=768,
        ),
    )
}
# fmt: on


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as llama.cpp names and sizes it; ``ne`` in GGML order (row length first)."""

    name: str
    ne: tuple[int, ...]
    dtype: QT

    @property
    def n_elements(self) -> int:
        return prod(self.ne)

    @property
    def n_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.dtype]
        return self.n_elements * size // block

    @property
    def numpy_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.ne))

    @property
    def is_norm(self) -> bool:
        return len(self.ne) == 1


def _name(tensor: gguf.MODEL_TENSOR, bid: int | None = None) -> str:
    return gguf.TENSOR_NAMES[tensor].format(bid=bid) + ".weight"


def tensor_specs(shape: Shape) -> tuple[TensorSpec, ...]:
    """Every tensor of ``shape``, in file order, with the dimensions llama.cpp's loader checks
    (src/models/llama.cpp and src/models/qwen3moe.cpp: ``create_tensor`` calls)."""
    e, w, f32 = shape.n_embd, shape.dtype, QT.F32
    q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    specs = [TensorSpec(_name(MT.TOKEN_EMBD), (e, shape.n_vocab), w)]
    for i in range(shape.n_layer):
        specs += [
            TensorSpec(_name(MT.ATTN_NORM, i), (e,), f32),
            TensorSpec(_name(MT.ATTN_Q, i), (e, q), w),
            TensorSpec(_name(MT.ATTN_K, i), (e, kv), w),
            TensorSpec(_name(MT.ATTN_V, i), (e, kv), w),
            TensorSpec(_name(MT.ATTN_OUT, i), (q, e), w),
        ]
        if shape.arch == "qwen3moe":  # Qwen3 normalizes Q and K per head before RoPE
            specs += [
                TensorSpec(_name(MT.ATTN_Q_NORM, i), (shape.head_dim,), f32),
                TensorSpec(_name(MT.ATTN_K_NORM, i), (shape.head_dim,), f32),
            ]
        specs.append(TensorSpec(_name(MT.FFN_NORM, i), (e,), f32))
        if shape.is_moe:
            ff, n = shape.n_ff_exp, shape.n_expert
            specs += [
                # The router stays F32, as convert_hf_to_gguf.py and llama-quantize keep it.
                TensorSpec(_name(MT.FFN_GATE_INP, i), (e, n), f32),
                TensorSpec(_name(MT.FFN_GATE_EXP, i), (e, ff, n), w),
                TensorSpec(_name(MT.FFN_DOWN_EXP, i), (ff, e, n), w),
                TensorSpec(_name(MT.FFN_UP_EXP, i), (e, ff, n), w),
            ]
        else:
            specs += [
                TensorSpec(_name(MT.FFN_GATE, i), (e, shape.n_ff), w),
                TensorSpec(_name(MT.FFN_DOWN, i), (shape.n_ff, e), w),
                TensorSpec(_name(MT.FFN_UP, i), (e, shape.n_ff), w),
            ]
    specs += [
        TensorSpec(_name(MT.OUTPUT_NORM), (e,), f32),
        TensorSpec(_name(MT.OUTPUT), (e, shape.n_vocab), w),
    ]
    return tuple(specs)


def parameter_count(shape: Shape) -> int:
    return sum(t.n_elements for t in tensor_specs(shape))


def tensor_bytes(shape: Shape) -> int:
    """The tensor data of ``shape`` at its own types (the file adds header and padding)."""
    return sum(t.n_bytes for t in tensor_specs(shape))


# --- tokenizer ---------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# SentencePiece's word-start mark (U+2581), which the llama tokenizer puts for a space.
WORD_START = "\u2581"


def _filler() -> Iterator[str]:
    """Distinct pieces, short first: printable ASCII, then lowercase runs; each also after ▁."""
    singles = [c for c in string.printable if not c.isspace()]
    yield WORD_START
    for c in singles:
        yield c
        yield WORD_START + c
    for length in itertools.count(2):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            piece = "".join(letters)
            yield piece
            yield WORD_START + piece


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]


def make_vocab(n_vocab: int) -> Vocab:
    """A llama (SPM) vocabulary of exactly ``n_vocab`` tokens.

    llama.cpp needs every token distinct (``id_to_token.size() == token_to_id.size()``) and the
    byte tokens ``<0xXX>`` typed BYTE: it finds the newline token through ``<0x0A>`` and falls back
    to bytes for text no piece covers. The SPM tokenizer merges the pair of highest score first,
    so a piece scores minus its rank, as SentencePiece's own models do.
    """
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    fixed = len(SPECIAL_TOKENS) + len(byte_tokens)
    if n_vocab < fixed:
        raise ValueError(f"a llama vocabulary needs at least {fixed} tokens, not {n_vocab}")
    filler = list(itertools.islice(_filler(), n_vocab - fixed))
    tokens = (*SPECIAL_TOKENS, *byte_tokens, *filler)
    tt = gguf.TokenType
    types = (
        int(tt.UNKNOWN),
        int(tt.CONTROL),
        int(tt.CONTROL),
        *[int(tt.BYTE)] * len(byte_tokens),
        *[int(tt.NORMAL)] * len(filler),
    )
    scores = (0.0,) * fixed + tuple(-float(rank) for rank in range(len(filler)))
    return Vocab(tokens=tokens, scores=scores, types=types)


# A minimal chat format (Llama-2 style) over the tokens above, so that /v1/chat/completions
# renders turns the same way on every llama.cpp version.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'system' %}{{ '<<SYS>> ' + message['content'] + ' <</SYS>> ' }}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)


# --- writer ------------------------------------------------------------------------------------


def _metadata(writer: gguf.GGUFWriter, shape: Shape) -> None:
    writer.add_name(f"synthetic-{shape.name}")
    writer.add_file_type(int(shape.file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    # Explicit: qwen3moe's head size (128) is not n_embd / n_head (64).
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(shape.n_vocab)
    if shape.is_moe:
        writer.add_expert_count(shape.n_expert)
        writer.add_expert_used_count(shape.n_expert_used)
        writer.add_expert_feed_forward_length(shape.n_ff_exp)
    vocab = make_vocab(shape.n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_scores(list(vocab.scores))
    writer.add_token_types(list(vocab.types))
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _random_pool(n: int, dtype: QT, rng: np.random.Generator) -> np.ndarray:
    """``n`` random values of ``dtype``: an array of that type, or for a quantized type the
    bytes of its blocks (``_CHUNK`` is a whole number of blocks, so chunks quantize alone)."""
    if dtype in _NUMPY:
        pool = np.empty(n, dtype=_NUMPY[dtype])
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            pool[start:stop] = rng.standard_normal(stop - start, dtype=np.float32) * _WEIGHT_STD
        return pool
    block, size = gguf.GGML_QUANT_SIZES[dtype]
    out = np.empty(n // block * size, dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        values = rng.standard_normal(stop - start, dtype=np.float32) * _WEIGHT_STD
        out[start // block * size : stop // block * size] = gguf.quants.quantize(values, dtype)
    return out


def _tensor_data(t: TensorSpec, pools: dict[QT, np.ndarray]) -> np.ndarray:
    if t.is_norm:  # RMS-norm weights of 1: the activations keep their scale
        return np.ones(t.numpy_shape, dtype=_NUMPY[t.dtype])
    if t.dtype in _NUMPY:
        return pools[t.dtype][: t.n_elements].reshape(t.numpy_shape)
    # A quantized tensor is written as its bytes, one row of blocks per row.
    return pools[t.dtype][: t.n_bytes].reshape(*t.numpy_shape[:-1], t.n_bytes // prod(t.ne[1:]))


def _layer(t: TensorSpec) -> int | None:
    """The block a tensor belongs to ("blk.3.attn_q.weight" -> 3); None outside the blocks."""
    return int(t.name.split(".")[1]) if t.name.startswith("blk.") else None


def write_model(
    path: str | Path,
    shape: Shape,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    sparse: bool = False,
) -> int:
    """Write ``shape`` with random weights to ``path``; return the file's size in bytes.

    ``sparse``: write the header only and leave the tensor data a hole of its full size (zeros
    that take no disk), for tools that read only the metadata; the file is as long as with
    weights.
    """
    specs = tensor_specs(shape)
    writer = gguf.GGUFWriter(path, shape.arch)
    _metadata(writer, shape)
    for t in specs:
        # Element shape with the GGML type: the writer keeps it as is for any type.
        writer.add_tensor_info(t.name, t.numpy_shape, np.dtype(np.float32), t.n_bytes, t.dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    if sparse:
        # The layout GGUFWriter writes: data aligned after the header, each tensor padded.
        align = writer.data_alignment
        assert writer.fout is not None
        end = writer.ggml_pad(writer.fout[0].tell(), align)
        end += sum(writer.ggml_pad(t.n_bytes, align) for t in specs)
        writer.close()
        os.truncate(path, end)
        return end

    rng = np.random.default_rng(seed)
    pools: dict[QT, np.ndarray] = {}
    for dtype in sorted({t.dtype for t in specs if not t.is_norm}):
        largest = max(t.n_elements for t in specs if t.dtype == dtype and not t.is_norm)
        pools[dtype] = _random_pool(largest, dtype, rng)

    total = sum(t.n_bytes for t in specs)
    done = 0
    started = time.monotonic()
    layers = [_layer(t) for t in specs]
    for i, t in enumerate(specs):
        writer.write_tensor_data(_tensor_data(t, pools))
        done += t.n_bytes
        following = layers[i + 1] if i + 1 < len(layers) else None
        if progress and layers[i] is not None and layers[i] != following:  # a layer is done
            rate = done / max(time.monotonic() - started, 1e-9) / 1e6
            progress(
                f"layer {layers[i] + 1}/{shape.n_layer} written:"
                f" {done / 1e9:.2f}/{total / 1e9:.2f} GB ({rate:.0f} MB/s)"
            )
    writer.close()
    return Path(path).stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmtune.synthetic_model",
        description="Write a GGUF model of a known shape with random weights.",
    )
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--type",
        choices=sorted(TYPES),
        help="weight type of the 2-D tensors (default: the shape's own, see the table)",
    )
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="header only: the tensor data is a hole (zeros, no disk), for metadata tests",
    )
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    if args.type:
        shape = replace(shape, dtype=TYPES[args.type])
    size = tensor_bytes(shape)
    params = parameter_count(shape)
    print(
        f"writing {args.shape} ({params:,} parameters, {size / 1e9:.2f} GB) to {args.out}",
        file=sys.stderr,
    )
    # Progress for the shapes that take more than a moment to write.
    report = (lambda line: print(line, file=sys.stderr, flush=True)) if size > 1 << 30 else None
    written = write_model(args.out, shape, seed=args.seed, progress=report, sparse=args.sparse)
    print(f"wrote {args.out}: {written:,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
