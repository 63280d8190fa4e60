from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.spec.registry import TINY_MODELS
from pipelines.tiny.build import TINY_BUILDERS, build_tiny_model
from pipelines.tiny.qwen import QWEN_SPECIAL_TOKENS, build_qwen_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[4]


def digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_there_is_a_builder_for_every_tiny_registry_entry():
    assert set(TINY_BUILDERS) == set(TINY_MODELS)


def test_unknown_name_is_refused(tmp_path):
    with pytest.raises(KeyError, match="tiny-wan"):
        build_tiny_model("tiny-nothing", tmp_path / "x")


def test_builds_are_identical_and_leave_nothing_behind(tmp_path):
    build_tiny_model("tiny-wan", tmp_path / "a" / "tiny-wan")
    build_tiny_model("tiny-wan", tmp_path / "b" / "tiny-wan")

    assert digest(tmp_path / "a" / "tiny-wan") == digest(tmp_path / "b" / "tiny-wan")
    assert [p.name for p in (tmp_path / "a").iterdir() if "building" in p.name] == []


def test_existing_model_is_left_alone(tmp_path):
    target = tmp_path / "tiny-wan"
    build_tiny_model("tiny-wan", target)
    marker = target / "marker"
    marker.write_text("kept")
    build_tiny_model("tiny-wan", target)
    assert marker.read_text() == "kept"


def test_concurrent_processes_build_once(tmp_path):
    target = tmp_path / "tiny-wan"
    code = "import sys; from pathlib import Path; from pipelines.tiny.build import build_tiny_model; build_tiny_model('tiny-wan', Path(sys.argv[1]))"
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=REPO_ROOT) for _ in range(2)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-wan.lock", "tiny-wan"]


def test_qwen_text_encoder_knows_the_tokenizer_ids(models_dir, t2i_runner, edit_runner):
    tokenizer = build_qwen_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    for name in ("tiny-qwen-image", "tiny-qwen-image-edit"):
        config = json.loads((models_dir / name / "text_encoder" / "config.json").read_text())
        assert config["image_token_id"] == ids["<|image_pad|>"]
        assert config["video_token_id"] == ids["<|video_pad|>"]
        assert config["vision_start_token_id"] == ids["<|vision_start|>"]
        assert config["vision_end_token_id"] == ids["<|vision_end|>"]
        assert config["text_config"]["vocab_size"] == len(tokenizer)
        saved = json.loads((models_dir / name / "tokenizer" / "tokenizer.json").read_text())
        assert {t["content"]: t["id"] for t in saved["added_tokens"]} == ids
