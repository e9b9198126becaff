"""GgufModel: the fact's real command on real GGUF files, checked against gguf.GGUFReader.

The files are the project's synthetic models written here by llmtune.synthetic_model (the big
shapes as sparse files: their real header, their data a hole), and a real llama-quantize Q4_K_M
output recorded under fixtures/recorded/model/.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from conftest import FIXTURES, run_command

from llmtune import synthetic_model as sm
from llmtune.facts.model import GgufModel, GgufModelValue, file_type_name, parse_probe

RECORDED_Q4 = FIXTURES / "recorded" / "model" / "tiny-q4_k_m.gguf"


def read_fact(path: str | Path) -> GgufModelValue:
    return GgufModel().process(run_command(GgufModel().command(str(path))))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic shapes: tiny ones with weights, big ones sparse (header only)."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, shape in sm.SHAPES.items():
        paths[name] = root / f"{name}.gguf"
        sm.write_model(paths[name], shape, sparse=shape.dtype != gguf.GGMLQuantizationType.F32)
    paths["tiny-q4_k_m"] = RECORDED_Q4
    return paths


@pytest.fixture(scope="session")
def values(models: dict[str, Path]) -> dict[str, GgufModelValue]:
    """The fact read once per model: gguf.GGUFReader takes seconds over a 152k-token vocabulary."""
    return {name: read_fact(path) for name, path in models.items()}


def _plain(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def expected_from_whole_file(path: Path) -> GgufModelValue:
    """What the file holds, read by gguf.GGUFReader from the whole file on disk."""
    reader = gguf.GGUFReader(path)
    arch = _plain(reader, "general.architecture")
    heads = _plain(reader, f"{arch}.attention.head_count")
    embd = _plain(reader, f"{arch}.embedding_length")
    return GgufModelValue(
        available=True,
        path=str(path),
        file_bytes=path.stat().st_size,
        architecture=arch,
        name=_plain(reader, "general.name"),
        file_type=gguf.LlamaFileType(_plain(reader, "general.file_type")).name.split("_", 1)[1],
        block_count=_plain(reader, f"{arch}.block_count"),
        context_length=_plain(reader, f"{arch}.context_length"),
        embedding_length=embd,
        feed_forward_length=_plain(reader, f"{arch}.feed_forward_length"),
        head_count=heads,
        head_count_kv=_plain(reader, f"{arch}.attention.head_count_kv"),
        key_length=_plain(reader, f"{arch}.attention.key_length") or embd // heads,
        value_length=_plain(reader, f"{arch}.attention.value_length") or embd // heads,
        expert_count=_plain(reader, f"{arch}.expert_count") or 0,
        expert_used_count=_plain(reader, f"{arch}.expert_used_count") or 0,
        nextn_predict_layers=0,
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        expert_tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors if "_exps" in t.name),
    )


@pytest.mark.parametrize("name", ["tiny", "tiny-moe", "tiny-q4_k_m", "llama-8b", "qwen3moe"])
def test_fact_matches_the_whole_file_read_by_gguf(
    models: dict[str, Path], values: dict[str, GgufModelValue], name: str
) -> None:
    assert values[name] == expected_from_whole_file(models[name])


def test_fact_is_pure(models: dict[str, Path], values: dict[str, GgufModelValue]) -> None:
    lines = run_command(GgufModel().command(str(models["tiny-moe"])))
    assert GgufModel().process(lines) == GgufModel().process(lines) == values["tiny-moe"]


@pytest.mark.parametrize("name", ["tiny", "tiny-moe", "llama-8b", "qwen3moe"])
def test_fact_reads_the_shapes_hyperparameters(
    models: dict[str, Path], values: dict[str, GgufModelValue], name: str
) -> None:
    shape = sm.SHAPES[name]
    value = values[name]
    assert (value.architecture, value.name) == (shape.arch, f"synthetic-{name}")
    assert value.file_type == shape.dtype.name  # "F32" / "F16"
    assert value.block_count == shape.n_layer
    assert value.context_length == shape.n_ctx
    assert value.embedding_length == shape.n_embd
    assert value.feed_forward_length == shape.n_ff
    assert (value.head_count, value.head_count_kv) == (shape.n_head, shape.n_head_kv)
    assert value.key_length == value.value_length == shape.head_dim
    assert (value.expert_count, value.expert_used_count) == (shape.n_expert, shape.n_expert_used)
    assert value.is_moe == shape.is_moe
    assert value.vocab_size == shape.n_vocab
    assert value.tensor_bytes == sm.tensor_bytes(shape)
    assert value.file_bytes == models[name].stat().st_size


def test_llama_8b_sizes_and_kv_cache(values: dict[str, GgufModelValue]) -> None:
    value = values["llama-8b"]
    # 32 layers * 8 KV heads * 128 values * (K + V) * 2 bytes.
    assert value.kv_bytes_per_token("f16", "f16") == 32 * 8 * 128 * 2 * 2 == 131072
    assert value.kv_bytes_per_token("q8_0", "q8_0") == 32 * 8 * 128 * 2 * 34 / 32
    assert value.kv_bytes_per_token("f16", "q4_0") == 32 * 8 * 128 * (2 + 18 / 32)
    assert value.tensor_bytes == 14_483_996_672  # about 14.5 GB at F16
    assert value.expert_tensor_bytes == 0


def test_qwen3moe_expert_share(values: dict[str, GgufModelValue]) -> None:
    value = values["qwen3moe"]
    # Up, gate and down of 128 experts of 2048 x 768 per layer, 48 layers, F16.
    assert value.expert_tensor_bytes == 48 * 3 * 128 * 2048 * 768 * 2
    assert value.expert_tensor_bytes / value.tensor_bytes > 0.94
    # head size 128 is set explicitly: n_embd / n_head would give 64.
    assert value.kv_bytes_per_token() == 48 * 4 * 128 * 2 * 2


def test_quantized_file_type_and_tensor_types(values: dict[str, GgufModelValue]) -> None:
    value = values["tiny-q4_k_m"]
    assert value.file_type == "Q4_K_M"
    types = {t.tensor_type.name for t in gguf.GGUFReader(RECORDED_Q4).tensors}
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"} <= types
    assert value.tensor_bytes < value.file_bytes < 1_584_640 / 4


def test_tensor_type_newer_than_the_gguf_library() -> None:
    """llama.cpp 0c1e570's Q2_0 (tensor type 42): gguf 0.19 stops at Q1_0 (41)."""
    path = FIXTURES / "recorded" / "model" / "tiny-q2_0.gguf"
    value = read_fact(path)
    assert value.file_bytes == path.stat().st_size
    if 42 in {int(t) for t in gguf.GGMLQuantizationType}:  # a gguf release that caught up
        assert value.available and value.file_type == "Q2_0"
        return
    assert not value.available
    assert value.reason == (
        f"tensor type 42 is unknown to gguf {metadata.version('gguf')}: the file is newer than"
        " the gguf library; a newer gguf reads it"
    )


def test_path_with_spaces_and_quotes(models: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / 'a model\'s "file" $HOME.gguf'
    odd.write_bytes(models["tiny"].read_bytes())
    value = read_fact(odd)
    assert value.available and value.path == str(odd)


def test_missing_file(tmp_path: Path) -> None:
    value = read_fact(tmp_path / "absent.gguf")
    assert not value.available
    assert value.reason == "cannot read the file: No such file or directory"
    assert value.path == str(tmp_path / "absent.gguf")


def test_directory(tmp_path: Path) -> None:
    value = read_fact(tmp_path)
    assert not value.available and value.reason == "cannot read the file: Is a directory"


def test_not_gguf() -> None:
    value = read_fact(FIXTURES / "recorded" / "model" / "SOURCE.md")
    assert not value.available
    assert value.reason == "not a GGUF file (it starts with b'# Re')"
    assert value.file_bytes == (FIXTURES / "recorded" / "model" / "SOURCE.md").stat().st_size


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    value = read_fact(tmp_path / "empty.gguf")
    assert not value.available and value.reason == "not a GGUF file (it has 0 bytes)"


def test_truncated_in_the_tensor_data(models: dict[str, Path], tmp_path: Path) -> None:
    """An interrupted download: the header is whole, the weights stop short."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(models["tiny"].read_bytes()[:1_000_000])
    value = read_fact(cut)
    assert not value.available
    assert value.reason == (
        "truncated: the tensor data ends at byte 1584640, the file has 1000000 bytes"
    )
    assert value.file_bytes == 1_000_000


def test_truncated_in_the_header(models: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(models["tiny"].read_bytes()[:20_000])  # inside the tokenizer's arrays
    value = read_fact(cut)
    assert not value.available
    assert value.reason.startswith("truncated: the header runs past the end of the file (byte ")
    assert value.reason.endswith(" of 20000)")


def test_no_path_given() -> None:
    value = read_fact("")
    assert not value.available and value.reason == "no model path given"


def test_without_python3_on_the_host(models: dict[str, Path], tmp_path: Path) -> None:
    command = GgufModel().command(str(models["tiny"]))
    proc = subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": str(tmp_path)},  # an empty directory: no python3
    )
    value = GgufModel().process(proc.stdout.splitlines())
    assert not value.available and value.reason == "python3 is not installed on the host"


def test_output_cut_short_or_damaged(models: dict[str, Path]) -> None:
    lines = run_command(GgufModel().command(str(models["tiny"])))
    end = lines.index("end")
    # Cut inside the payload (a timeout): no "end", no rc trailer.
    cut = GgufModel().process(lines[: end - 1])
    assert not cut.available
    assert cut.reason == "the probe did not finish"
    assert parse_probe(lines[: end - 1]).damaged == "the probe's output was cut short"
    # One base64 character changed.
    begin = lines.index("begin")
    damaged = list(lines)
    damaged[begin + 1] = ("A" if damaged[begin + 1][0] != "A" else "B") + damaged[begin + 1][1:]
    value = GgufModel().process(damaged)
    assert not value.available and "damaged" in value.reason
    assert value.path == str(models["tiny"])


def test_no_output() -> None:
    assert GgufModel().process([]) == GgufModel().default()
    assert GgufModel().process([]) == GgufModelValue(False, "no output")


def test_per_layer_kv_heads_and_split_count(tmp_path: Path) -> None:
    """Arrays per layer (a hybrid model: no KV heads in its recurrent layers) and split.count,
    as gguf.GGUFWriter writes them."""
    writer = gguf.GGUFWriter(tmp_path / "hybrid.gguf", "llama", split_max_tensors=1)
    writer.add_block_count(4)
    writer.add_embedding_length(256)
    writer.add_head_count([8, 8, 8, 8])
    writer.add_head_count_kv([0, 2, 0, 2])
    writer.add_tensor("token_embd.weight", np.zeros((16, 256), dtype=np.float16))
    writer.add_tensor("output.weight", np.zeros((16, 256), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    first = tmp_path / "hybrid-00001-of-00002.gguf"
    value = read_fact(first)
    assert value.available
    assert (value.head_count, value.head_count_kv) == (8, 2)
    assert value.head_count_kv_per_layer == (0, 2, 0, 2)
    assert (value.key_length, value.value_length) == (32, 32)  # 256 / 8: no key_length key
    # Two layers with 2 KV heads of 32, K and V at 2 bytes: not 4 layers * 2 heads.
    assert value.kv_bytes_per_token() == 2 * 2 * 32 * 2 * 2
    assert value.split_count == 2
    assert value.tensor_bytes == 16 * 256 * 2  # this shard's tensor only
    assert value.file_type == "" and value.vocab_size == 0


@pytest.mark.parametrize(
    ("code", "name"),
    [(0, "F32"), (1, "F16"), (15, "Q4_K_M"), (7, "Q8_0"), (32, "BF16"), (38, "MXFP4_MOE")],
)
def test_file_type_names(code: int, name: str) -> None:
    assert file_type_name(code) == name


def test_file_type_unknown_or_absent() -> None:
    assert file_type_name(None) == ""
    assert file_type_name(1024) == ""  # LLAMA_FTYPE_GUESSED: not from the file
    assert file_type_name(999) == "unknown (999)"


def test_probe_leaves_no_temporary_file(models: dict[str, Path]) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    read_fact(models["tiny"])
    read_fact(models["tiny-q4_k_m"])
    after = set(os.listdir(tempfile.gettempdir()))
    assert not {n for n in after - before if n.startswith("llmtune-gguf-")}
