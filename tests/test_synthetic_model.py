"""The synthetic models: shapes, tensor lists, tokenizer, and the writer's files read back with
gguf.GGUFReader. The big shapes are checked by their tensor lists and sizes (and, in
test_model_facts, by their real headers over sparse data); only the tiny ones are written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from llmtune import synthetic_model as sm

QT = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    paths = {}
    for name in ("tiny", "tiny-moe"):
        paths[name] = root / f"{name}.gguf"
        sm.write_model(paths[name], sm.SHAPES[name], seed=0)
    return paths


def test_docstring_tables_match_the_shapes() -> None:
    doc = sm.__doc__ or ""
    for shape in sm.SHAPES.values():
        experts = (
            f"{shape.n_expert}/{shape.n_expert_used}/{shape.n_ff_exp}" if shape.is_moe else "-"
        )
        row = (
            f"{shape.name} {shape.arch} {shape.n_layer} {shape.n_embd} {shape.n_ff} "
            f"{shape.n_head}/{shape.n_head_kv} {shape.head_dim} {experts} {shape.n_vocab} "
            f"{shape.n_ctx} {shape.dtype.name}"
        )
        sizes = f"{shape.name} {sm.parameter_count(shape):,} {sm.tensor_bytes(shape):,}"
        lines = {re.sub(r"\s+", " ", line.strip()) for line in doc.splitlines()}
        assert row in lines
        assert sizes in lines


def test_tensor_names_belong_to_the_architecture() -> None:
    """Every tensor is one gguf-py lists for the architecture (gguf.MODEL_TENSORS)."""
    for shape in sm.SHAPES.values():
        arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == shape.arch)
        allowed = {
            gguf.TENSOR_NAMES[t].format(bid=i) + ".weight"
            for t in gguf.MODEL_TENSORS[arch]
            for i in range(shape.n_layer)
        }
        names = [t.name for t in sm.tensor_specs(shape)]
        assert len(names) == len(set(names))
        assert set(names) <= allowed


def test_llama_8b_is_mistral_7b_shaped() -> None:
    shape = sm.SHAPES["llama-8b"]
    specs = {t.name: t for t in sm.tensor_specs(shape)}
    # llama.cpp's dimensions (ne0 first): {n_embd, n_embd_k_gqa} for K, {n_ff, n_embd} for down.
    assert specs["blk.0.attn_q.weight"].ne == (4096, 4096)
    assert specs["blk.0.attn_k.weight"].ne == (4096, 1024)
    assert specs["blk.31.ffn_down.weight"].ne == (14336, 4096)
    assert specs["token_embd.weight"].ne == (4096, 32000)
    assert len(specs) == 2 + 32 * 9 + 1
    assert sm.parameter_count(shape) == 7_241_732_096  # Mistral-7B-v0.1's parameter count
    assert sm.tensor_bytes(shape) == 14_483_996_672  # F16 matrices, F32 norms: ~14.5 GB


def _q4_k_m_type(name: str, layer_of_kind: int, n_layer: int) -> QT:
    """llama.cpp's Q4_K_M mix for a dense llama (src/llama-quant.cpp, llama_tensor_get_type):
    Q6_K for output.weight, and for attn_v / ffn_down in the layers use_more_bits() picks
    (the first and last eighth, every third between); Q4_K for the other matrices."""
    eighth = n_layer // 8
    more_bits = (
        layer_of_kind < eighth
        or layer_of_kind >= 7 * n_layer // 8
        or (layer_of_kind - eighth) % 3 == 2
    )
    if name == "output.weight":
        return QT.Q6_K
    if ("attn_v" in name or "ffn_down" in name) and more_bits:
        return QT.Q6_K
    return QT.Q4_K


def test_llama_8b_at_q4_k_m_is_the_anchors_8b() -> None:
    """The measured anchors' 8B Q4_K_M file is 4,368,445,280 bytes; this shape's tensor data at
    llama.cpp's Q4_K_M mix is that less a header of 0.7 MB (the anchors' own tokenizer)."""
    shape = sm.SHAPES["llama-8b"]
    total = 0
    for t in sm.tensor_specs(shape):
        qtype = QT.F32 if t.is_norm else _q4_k_m_type(t.name, _layer(t.name), shape.n_layer)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        total += t.n_elements * size // block
    assert total == 4_367_704_064
    header = 4_368_445_280 - total
    assert 0 < header < 1 << 20


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else 0


def test_qwen3moe_is_qwen3_30b_a3b_shaped() -> None:
    shape = sm.SHAPES["qwen3moe"]
    specs = {t.name: t for t in sm.tensor_specs(shape)}
    # {n_embd, n_ff_exp, n_expert} for gate/up, {n_ff_exp, n_embd, n_expert} for down.
    assert specs["blk.0.ffn_gate_exps.weight"].ne == (2048, 768, 128)
    assert specs["blk.47.ffn_down_exps.weight"].ne == (768, 2048, 128)
    assert specs["blk.0.ffn_gate_inp.weight"].ne == (2048, 128)
    assert specs["blk.0.ffn_gate_inp.weight"].dtype == QT.F32
    assert specs["blk.0.attn_q.weight"].ne == (2048, 32 * 128)  # head size 128, not 2048 / 32
    assert specs["blk.0.attn_k_norm.weight"].ne == (128,)
    total = sm.parameter_count(shape)
    experts = sum(t.n_elements for t in specs.values() if "_exps" in t.name)
    active = total - experts + experts * shape.n_expert_used // shape.n_expert
    assert total == 30_532_122_624  # "30.5B"
    assert active == 3_353_032_704  # "3.3B activated"


def test_vocab_layout() -> None:
    vocab = sm.make_vocab(2048)
    assert len(vocab.tokens) == len(vocab.scores) == len(vocab.types) == 2048
    assert len(set(vocab.tokens)) == 2048  # llama.cpp asserts distinct tokens
    assert vocab.tokens[:3] == ("<unk>", "<s>", "</s>")
    assert vocab.tokens[3] == "<0x00>" and vocab.tokens[3 + 10] == "<0x0A>"
    assert vocab.tokens[258] == "<0xFF>"
    tt = gguf.TokenType
    assert vocab.types[:4] == (tt.UNKNOWN, tt.CONTROL, tt.CONTROL, tt.BYTE)
    assert set(vocab.types[259:]) == {tt.NORMAL}
    assert vocab.tokens[259] == sm.WORD_START
    assert vocab.scores[259:262] == (0.0, -1.0, -2.0)
    assert len(set(sm.make_vocab(151936).tokens)) == 151936
    with pytest.raises(ValueError, match="at least 259"):
        sm.make_vocab(100)


def test_written_files_read_back(written: dict[str, Path]) -> None:
    for name, path in written.items():
        shape = sm.SHAPES[name]
        reader = gguf.GGUFReader(path)
        fields = {k: f.contents() for k, f in reader.fields.items()}
        arch = shape.arch
        assert fields["general.architecture"] == arch
        assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
        assert fields[f"{arch}.block_count"] == shape.n_layer
        assert fields[f"{arch}.attention.key_length"] == shape.head_dim
        assert fields[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(shape.rms_eps)
        assert fields["tokenizer.ggml.model"] == "llama"
        assert fields["tokenizer.ggml.tokens"] == list(sm.make_vocab(shape.n_vocab).tokens)
        assert fields["tokenizer.ggml.bos_token_id"] == 1
        if shape.is_moe:
            assert fields[f"{arch}.expert_count"] == shape.n_expert
            assert fields[f"{arch}.expert_used_count"] == shape.n_expert_used
            assert fields[f"{arch}.expert_feed_forward_length"] == shape.n_ff_exp
        specs = sm.tensor_specs(shape)
        assert [t.name for t in reader.tensors] == [t.name for t in specs]
        for tensor, spec in zip(reader.tensors, specs, strict=True):
            assert tuple(int(d) for d in tensor.shape) == spec.ne
            assert tensor.tensor_type == spec.dtype
            data = np.asarray(tensor.data)
            if spec.is_norm:
                assert (data == 1).all()
            else:
                assert np.isfinite(data).all()
                assert 0.015 < float(data.std()) < 0.025


def test_same_seed_same_file_other_seed_other_weights(
    written: dict[str, Path], tmp_path: Path
) -> None:
    again, other = tmp_path / "again.gguf", tmp_path / "other.gguf"
    sm.write_model(again, sm.SHAPES["tiny"], seed=0)
    sm.write_model(other, sm.SHAPES["tiny"], seed=1)
    assert again.read_bytes() == written["tiny"].read_bytes()
    a, b = gguf.GGUFReader(again), gguf.GGUFReader(other)
    assert a.data_offset == b.data_offset
    assert bytes(a.data[: a.data_offset]) == bytes(b.data[: b.data_offset])
    assert bytes(a.data[a.data_offset :]) != bytes(b.data[b.data_offset :])


def test_sparse_file_is_the_full_file_without_its_data(
    written: dict[str, Path], tmp_path: Path
) -> None:
    for name, path in written.items():
        sparse = tmp_path / f"{name}-sparse.gguf"
        size = sm.write_model(sparse, sm.SHAPES[name], sparse=True)
        full = path.read_bytes()
        assert size == sparse.stat().st_size == len(full)
        offset = gguf.GGUFReader(path).data_offset
        assert sparse.read_bytes()[:offset] == full[:offset]
        assert sparse.read_bytes()[offset:] == bytes(len(full) - offset)


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "llmtune.synthetic_model", str(out), "--shape", "tiny-moe"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"writing tiny-moe (484,736 parameters, 0.00 GB) to {out}",
        f"wrote {out}: {out.stat().st_size:,} bytes",
    ]
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "synthetic-tiny-moe"


def test_progress_is_reported_per_layer(tmp_path: Path) -> None:
    lines: list[str] = []
    sm.write_model(tmp_path / "p.gguf", sm.SHAPES["tiny-moe"], progress=lines.append)
    assert [line.split(":")[0] for line in lines] == ["layer 1/2 written", "layer 2/2 written"]


def test_q8_0_type_writes_blocks_that_dequantize_to_the_random_weights(tmp_path: Path) -> None:
    # --type q8_0 is how the 61 GB qwen3moe shape is written in 32 GB for llama-quantize.
    out = tmp_path / "q8.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "llmtune.synthetic_model", str(out), "--shape", "tiny-moe",
         "--type", "q8_0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    shape = sm.SHAPES["tiny-moe"]
    by_name = {t.name: t for t in reader.tensors}
    for spec in sm.tensor_specs(shape):
        tensor = by_name[spec.name]
        expected = QT.F32 if spec.is_norm or "ffn_gate_inp" in spec.name else QT.Q8_0
        assert tensor.tensor_type == expected, spec.name
        assert tuple(int(n) for n in tensor.shape) == spec.ne
        assert tensor.n_bytes == spec.n_elements * (34 if expected == QT.Q8_0 else 128) // 32
    experts = by_name["blk.1.ffn_down_exps.weight"]
    values = gguf.quants.dequantize(experts.data, experts.tensor_type)
    assert values.shape == (8, 64, 64)  # (experts, n_embd, n_ff_exp) in numpy order
    assert abs(float(values.std()) - 0.02) < 0.002
    assert abs(float(values.mean())) < 0.002
