"""CLI smoke tests in subprocesses (real entry point, real exit codes) and one-line errors (through ``main`` in this
process, a few through the console script)."""

import os
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import cli_in_process

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def musekit(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "musekit", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_generate_writes_a_png_and_says_where(tiny_model_dir, tmp_path):
    out = tmp_path / "sub" / "img.png"
    result = musekit("generate", "a red circle", "--model", str(tiny_model_dir), "--out", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and Image.open(out).size == (16, 16)
    assert str(out) in result.stdout


def test_generate_grid_and_options(tiny_model_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = musekit(
        "generate", "a red circle", "--model", str(tiny_model_dir), "--out", str(out), "--num", "4",
        "--steps", "3", "--sr-steps", "2", "--guidance", "3", "--negative", "blue", "--quiet", "--top-k", "2",
        "--int8", "--sr-strength", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)


def test_cli_generates_without_importing_scikit_learn(tiny_model_dir, tmp_path):
    # transformers imports scikit-learn (~0.8 s of a cold start) when installed; the CLI tells it not to
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--out", str(tmp_path / "a.png"), "--quiet"]
    code = f"import sys; from musekit.cli.main import main; main({args!r}); print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_console_script_is_installed():
    bindir = os.path.dirname(sys.executable)
    result = subprocess.run([os.path.join(bindir, "musekit"), "--version"], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0 and "musekit" in result.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "  "], "prompt is empty"),
        (["generate", "a cat", "--steps", "0"], "positive integer"),
        (["generate", "a cat", "--guidance", "abc"], "number"),
        (["generate", "a cat", "--guidance", "inf"], "expected a finite number"),
        (["generate", "a cat", "--num", "65"], "at most 64 images in one call"),
        (["generate", "a cat", "--bias", "nan"], "expected a finite number"),
        (["generate", "a cat", "--temperature", "0"], "--temperature: expected a positive number"),
        (["generate", "a cat", "--guidance-schedule", "zigzag"], "invalid choice"),
        (["generate", "a cat", "--model", "/nonexistent/model"], "model folder not found"),
        (["generate", "a cat", "--out", "/proc/forbidden/x.png"], "cannot write"),
        (["generate", "a cat", "--out", "picture.jpg"], ".png"),
        (["generate", "a cat", "--bogus"], "unrecognized arguments"),
        (["generate", "a cat", "--seed", "-1"], "a seed is from 0 to"),
        (["generate", "a cat", "--seed", str(2**64)], "a seed is from 0 to"),
        (["frobnicate"], "invalid choice"),
        (["encode-shards", "--tokenizer", "t", "--out", "o", "--jitter", "2"], "--jitter must be in [0, 1]"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(args, needle, tiny_model_dir, tmp_path, capsys):
    if "--model" not in args and args[0] == "generate":
        args = [*args, "--model", str(tiny_model_dir)]
    if "--out" not in args and args[0] == "generate":
        args = [*args, "--out", str(tmp_path / "x.png")]
    code, stderr = cli_in_process(capsys, *args)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert needle in lines[0] and "Traceback" not in stderr


@pytest.mark.parametrize("args, needle", [(["generate", "  "], "prompt is empty"), (["frobnicate"], "invalid choice")])
def test_the_console_script_reports_bad_input_in_one_line(args, needle):
    result = musekit(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_build_pipeline_assembles_a_model_with_sampling_defaults(tmp_path):
    import json

    import torch

    from musekit.config import SuperResConfig, TransformerConfig, VQConfig
    from musekit.io.checkpoint import save_component
    from musekit.models import MaskedTransformer, SuperResTransformer
    from musekit.tokenizer import VQModel

    torch.manual_seed(0)
    vq_cfg = VQConfig.preset("tiny")
    base_cfg = TransformerConfig.preset("tiny").replace(text_dim=384, patch_size=2)  # the bundled MiniLM's width
    sr_cfg = SuperResConfig.preset("tiny").replace(text_dim=384)
    save_component(VQModel(vq_cfg), vq_cfg, tmp_path / "tok")
    save_component(MaskedTransformer(base_cfg), base_cfg, tmp_path / "base")
    save_component(SuperResTransformer(sr_cfg), sr_cfg, tmp_path / "sr")
    (tmp_path / "captions.txt").write_text("a red circle\na blue square on a gray background\n")
    out = tmp_path / "model"
    result = musekit("build-pipeline", "--tokenizer", str(tmp_path / "tok"), "--base", str(tmp_path / "base"),
                     "--sr", str(tmp_path / "sr"), "--out", str(out), "--fp16", "--captions",
                     str(tmp_path / "captions.txt"), "--steps", "5", "--sr-strength", "0.5",
                     "--sr-guidance", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "model_index.json").read_text())
    assert index["pipeline"]["num_inference_steps"] == 5 and index["pipeline"]["sr_strength"] == 0.5
    assert index["pipeline"]["sr_guidance_scale"] == 1.0
    assert (out / "perfusion_covariance.safetensors").is_file()
    assert index["world"] == "shapes"  # built by musekit's recipes: shapes-world prompt notes apply to it
    from musekit.pipeline import MusePipeline

    built = MusePipeline.from_pretrained(out)
    assert built.is_shapes_world and not built.is_bundled
    copy = built.save_pretrained(tmp_path / "copy")
    assert MusePipeline.from_pretrained(copy).is_shapes_world
    bad = musekit("build-pipeline", "--tokenizer", str(tmp_path / "tok"), "--base", str(tmp_path / "base"),
                  "--out", str(tmp_path / "m2"), "--sr-strength", "2")  # fmt: skip
    assert bad.returncode == 2 and "sr_strength" in bad.stderr and "Traceback" not in bad.stderr


def test_int8_flag_takes_an_optional_scope():
    from musekit.cli.common import INT8_KINDS
    from musekit.cli.main import build_parser

    parser = build_parser()
    parse = lambda *a: parser.parse_args(["generate", "a red circle", *a]).int8  # noqa: E731
    assert parse() is None and INT8_KINDS[parse("--int8")] == "int8"
    assert INT8_KINDS[parse("--int8", "all")] == "int8-all"
    assert parser.parse_args(["eval", "shapes", "--int8", "all"]).int8 == "all"
    assert parser.parse_args(["eval", "shapes", "--half", "bf16-linears"]).half == "bf16-linears"


def test_generate_with_bf16_linears_records_the_flag(tiny_model_dir, tmp_path):
    from musekit.cli.main import main
    from musekit.io.metadata import command_line, read_record

    out = tmp_path / "fast.png"
    args = ["generate", "a red circle", "--model", str(tiny_model_dir), "--seed", "3", "--quiet"]
    assert main([*args, "--half", "bf16-linears", "--out", str(out)]) == 0
    record = read_record(out)
    assert record["half"] == "bf16-linears" and record["int8"] is None
    assert "--half bf16-linears" in command_line(record)


def test_eval_fast_path_flags_are_checked(tiny_model_dir, tmp_path, capsys):
    from musekit.cli.main import main

    base = ["eval", "--model", str(tiny_model_dir), "--out-dir", str(tmp_path)]
    assert main([*base[:1], "personalize", *base[1:], "--half", "bf16-linears"]) == 2
    assert "--half applies to `eval shapes` and `eval edit`" in capsys.readouterr().err
    assert main([*base[:1], "shapes", *base[1:], "--half", "bf16", "--int8"]) == 2
    assert "choose one fast path" in capsys.readouterr().err


def test_generate_a_prompt_file_and_each_image(tiny_model_dir, tmp_path, capsys):
    import numpy as np

    from musekit.cli.main import main
    from musekit.io.metadata import read_record

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two scenes\na red circle\n\n  a blue square  \n", encoding="utf-8-sig")  # a BOM too
    out = tmp_path / "run" / "img.png"
    args = ["generate", "--prompts", str(prompts), "--num", "2", "--each", "--seed", "7"]
    assert main([*args, "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]) == 0
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == sorted(f"img-00{k}{n}.png" for k in (1, 2) for n in ("", "-1", "-2"))
    assert [read_record(out.parent / f"img-00{k}.png")["prompt"] for k in (1, 2)] == ["a red circle", "a blue square"]
    single = read_record(out.parent / "img-002-2.png")
    assert (single["prompt"], single["seed"], single["num"], single["index"]) == ("a blue square", 7, 2, 1)
    # each prompt is made as if alone: the file equals a plain run of that prompt
    alone = tmp_path / "alone.png"
    assert main(["generate", "a blue square", "--num", "2", "--seed", "7", "--model", str(tiny_model_dir),
                 "--out", str(alone), "--quiet"]) == 0  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(alone)), np.asarray(Image.open(out.parent / "img-002.png")))
    capsys.readouterr()
    for bad, needle in (([str(prompts), "a cat"], "not several"), (["missing.txt"], "prompt file not found")):
        assert main(["generate", "--prompts", *bad[:1], *bad[1:], "--model", str(tiny_model_dir)]) == 2
        assert needle in capsys.readouterr().err


def test_the_bundled_model_names_words_it_never_saw(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from musekit.cli.main import main
    from musekit.pipeline import DEFAULT_MODEL_DIR, MusePipeline

    args = ["generate", "a crimson circle", "--out", str(tmp_path / "a.png"), "--quiet", "--steps", "1"]
    assert main([*args, "--model", str(tiny_model_dir)]) == 0  # another model: its words are its own business
    assert "never saw" not in capsys.readouterr().err
    loaded = MusePipeline.from_pretrained(tiny_model_dir)
    loaded.source_folder = DEFAULT_MODEL_DIR  # stands in for the bundled model (a tiny one, for speed)
    monkeypatch.setattr("musekit.cli.generate.load_pipeline", lambda model: loaded)
    assert main(args) == 0
    assert "the model never saw 'crimson' in training" in capsys.readouterr().err
    assert main(["generate", "a blue background", *args[2:]]) == 0
    err = capsys.readouterr().err
    assert "musekit: note: the prompt names no shape" in err and "never saw" not in err


def test_a_random_seed_is_printed_and_recorded(tiny_model_dir, tmp_path, capsys):
    from musekit.cli.main import main
    from musekit.io.metadata import read_record

    out = tmp_path / "r.png"
    assert main(["generate", "a red circle", "--seed", "random", "--model", str(tiny_model_dir), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    seed = read_record(out)["seed"]
    assert isinstance(seed, int) and f"seed {seed}," in capsys.readouterr().out


def test_a_damaged_weights_file_is_one_line(tiny_model_dir, tmp_path, capsys):
    import shutil

    from musekit.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = next(model.glob("transformer/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a partial copy
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot read {weights}" in err and "damaged or partial" in err


def test_info_describes_the_files_it_can_read_and_names_the_others(tiny_pipe, tmp_path, capsys):
    from musekit.cli.main import main
    from musekit.io.images import save_image
    from musekit.io.metadata import attach, make_record

    good = save_image(attach(Image.new("RGB", (16, 16)), make_record(tiny_pipe, "generate", "a red circle", seed=1)),
                      tmp_path / "good.png")  # fmt: skip
    assert main(["info", str(tmp_path / "missing.png"), str(good)]) == 2
    captured = capsys.readouterr()
    assert "a red circle" in captured.out and "weights fingerprint" in captured.out
    assert captured.err.count("musekit: error:") == 1 and "missing.png" in captured.err


def test_a_closed_pipe_ends_quietly(tiny_pipe, tmp_path):
    from musekit.io.images import save_image
    from musekit.io.metadata import attach, make_record

    path = save_image(attach(Image.new("RGB", (16, 16)), make_record(tiny_pipe, "generate", "a red circle", seed=1)),
                      tmp_path / "a.png")  # fmt: skip
    code = f"from musekit.cli.main import main; raise SystemExit(main(['info', *[{str(path)!r}] * 200]))"
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    reader.stdout.read(10)  # `| head -c 10`
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 1 and err == "", err


def test_a_concept_token_without_its_concept_is_named(tiny_pipe, caplog):
    from musekit.personalize.tokens import register_pieces

    register_pieces(tiny_pipe.text_encoder, "<solo>", 1)  # as a call with a one-word-superclass concept leaves it
    with caplog.at_level("WARNING", logger="musekit.pipeline"):
        for prompt in ("a <emblem> left of a red circle", "a <solo> left of a red circle"):
            tiny_pipe(prompt, num_inference_steps=1, sr_inference_steps=1, output_type="ids")  # no index error
    assert "the prompt writes <emblem>, but no concept of this call defines it" in caplog.text
    assert "the prompt writes <solo>, but no concept" in caplog.text
