"""tune's winner written into a host's settings file: the keys, the marked block, the user's own
keys commented out, the backup, and the validation that keeps a bad file from being written."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtune.settings import SettingsError, read_mapping, settings_from_mapping
from llmtune.tune.config import Config
from llmtune.tune.host_vars import (
    BEGIN,
    END,
    HostVarsError,
    merge,
    render_block,
    settings_for,
    write,
)

# The plan under the 4 GB budget, and a winner with --fit's margin tune chose.
BUDGET = Config("fit", "q8_0", "on", 512, 16, None, 77559, "mlock")
EVIDENCE = ["tune on gpu1: 6 configuration(s) in 4 min 2 s", "  winner  tg64@d16384 24.1 t/s"]
USER_FILE = """\
# gpu1: the H100 VM
model_path: /srv/models/llama8b-q4_k_m.gguf
context_size: 32768
threads: 8  # set by hand
fit_target_mib: 77559
"""


# --- settings_for -------------------------------------------------------------------------------


def test_settings_for_the_budget_winner() -> None:
    keys = settings_for(BUDGET, margin_is_a_knob=False)
    assert keys == {"threads": 16, "kv_cache_type": "q8_0", "ubatch_size": 512, "flash_attn": "on"}


def test_fit_margin_written_only_when_it_was_a_knob() -> None:
    chosen = Config("fit", "f16", "on", 256, 16, None, 512)
    assert settings_for(chosen, margin_is_a_knob=True)["fit_target_mib"] == 512
    assert "fit_target_mib" not in settings_for(chosen, margin_is_a_knob=False)
    # Not under --fit, there is no margin to write.
    on_gpu = Config("gpu", "f16", "on", 512, 16)
    assert "fit_target_mib" not in settings_for(on_gpu, margin_is_a_knob=True)


def test_llama_cpp_defaults_are_not_written() -> None:
    assert settings_for(Config("cpu"), margin_is_a_knob=True) == {"kv_cache_type": "f16"}


def test_cpu_moe_cannot_be_written() -> None:
    with pytest.raises(HostVarsError, match="-cmoe"):
        settings_for(Config("cpu-moe", "q8_0", "on", 512, 16), margin_is_a_knob=False)


# --- merge --------------------------------------------------------------------------------------


def test_merge_comments_out_the_users_keys_and_appends_the_block() -> None:
    block = render_block({"threads": 16, "flash_attn": "on"}, EVIDENCE)
    merged = merge(USER_FILE, block, ["threads", "flash_attn"])
    lines = merged.splitlines()
    assert "# llmtune tune sets this below: threads: 8  # set by hand" in lines
    # Other lines and comments stay as they were, in their order.
    for line in ("# gpu1: the H100 VM", "context_size: 32768", "fit_target_mib: 77559"):
        assert line in lines
    assert merged.endswith(block)
    assert merged.count(BEGIN) == 1 and merged.count(END) == 1


def test_merge_replaces_an_earlier_block() -> None:
    first = merge(USER_FILE, render_block({"threads": 16}, ["first tune"]), ["threads"])
    second = merge(first, render_block({"threads": 12}, ["second tune"]), ["threads"])
    assert second.count(BEGIN) == 1 and "first tune" not in second
    assert "# second tune" in second and "threads: 12" in second
    assert "threads: 16" not in second
    # Lines after an earlier block (added by hand since) are kept.
    edited = first + "parallel: 2\n"
    assert "parallel: 2" in merge(edited, render_block({"threads": 12}, []), ["threads"])


def test_merge_matches_whole_top_level_keys_only() -> None:
    text = "threads_extra: 1\n  threads: 4\nthreads : 8\n"
    merged = merge(text, render_block({"threads": 16}, []), ["threads"])
    lines = merged.splitlines()
    assert lines[:3] == [
        "threads_extra: 1",
        "  threads: 4",
        "# llmtune tune sets this below: threads : 8",
    ]


def test_merge_into_an_empty_file_is_the_block() -> None:
    block = render_block({"threads": 16}, EVIDENCE)
    assert merge("", block, ["threads"]) == block


# --- write --------------------------------------------------------------------------------------


def test_write_creates_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "host_vars" / "gpu1.yaml"
    keys = settings_for(BUDGET, margin_is_a_knob=False)
    assert write(path, keys, EVIDENCE) is None
    data = read_mapping(path)
    assert data == keys
    # Quoted: a bare on would read back as True.
    assert data["flash_attn"] == "on" and isinstance(data["flash_attn"], str)
    text = path.read_text()
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "#   winner  tg64@d16384 24.1 t/s" in text
    assert [p.name for p in path.parent.iterdir()] == ["gpu1.yaml"]


def test_write_keeps_a_backup_of_the_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "gpu1.yaml"
    path.write_text(USER_FILE)
    keys = {"threads": 16, "kv_cache_type": "f16", "flash_attn": "off"}
    backup = write(path, keys, EVIDENCE)
    assert backup is not None and backup.parent == path.parent
    assert backup.name.startswith("gpu1.yaml.bak-")
    assert backup.read_text() == USER_FILE
    data = read_mapping(path)
    assert data["threads"] == 16  # the user's 8 is commented out: one value per key
    assert data["flash_attn"] == "off" and data["kv_cache_type"] == "f16"
    assert (data["context_size"], data["fit_target_mib"]) == (32768, 77559)
    settings = settings_from_mapping(data, str(path))
    assert (settings.threads, settings.flash_attn, settings.fit_target_mib) == (16, "off", 77559)


def test_write_twice_keeps_one_block(tmp_path: Path) -> None:
    path = tmp_path / "gpu1.yaml"
    path.write_text(USER_FILE)
    write(path, {"threads": 16}, ["first"])
    write(path, {"threads": 12, "ubatch_size": 256}, ["second"])
    text = path.read_text()
    assert text.count(BEGIN) == 1 and "# first" not in text
    assert read_mapping(path)["threads"] == 12


def test_a_block_that_makes_the_file_invalid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gpu1.yaml"
    path.write_text(USER_FILE)
    with pytest.raises(SettingsError, match="kv_cache_type"):
        write(path, {"threads": 16, "kv_cache_type": "q5_1"}, EVIDENCE)
    assert path.read_text() == USER_FILE
    # Neither a backup nor the temporary file is left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["gpu1.yaml"]


def test_a_refused_block_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "gpu1.yaml"
    with pytest.raises(SettingsError, match="threads"):
        write(path, {"threads": 0}, EVIDENCE)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
