"""Training recipes: runs, resume after a stop reproduces an uninterrupted run, shards, multi-process replicas."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from musekit.config import TextEncoderConfig
from musekit.data.shapes import ShapesWorld
from musekit.data.tokens import TokenShards, batch_indices
from musekit.training.config import TrainConfig
from musekit.training.loop import object_token_weights, train_transformer
from musekit.training.tokenizer_loop import train_tokenizer

TOK = dict(stage="tokenizer", model_preset="tiny", steps=4, batch_size=4, image_size=16, lr=1e-3, warmup_steps=1,
           log_every=1, sample_every=0, checkpoint_every=100, restart_dead_every=2, ema_decay=0.9)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_tokenizer(TrainConfig(**TOK), tmp_path_factory.mktemp("tok") / "run", progress=False)


def test_tokenizer_run_writes_everything(tokenizer_dir):
    run = tokenizer_dir.parent
    assert (tokenizer_dir / "config.json").is_file() and (tokenizer_dir / "model.safetensors").is_file()
    assert TrainConfig.load(run / "config.json") == TrainConfig(**TOK)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("psnr" in r for r in rows)
    assert json.loads((run / "latest.json").read_text())["step"] == 4


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, tokenizer_dir):
    config = TrainConfig(**TOK)
    assert train_tokenizer(config, tmp_path / "a", progress=False, stop_after=2) is None
    assert json.loads((tmp_path / "a" / "latest.json").read_text())["step"] == 2
    final = train_tokenizer(config, tmp_path / "a", progress=False)  # resumes at step 2
    ref = load_file(str(tokenizer_dir / "model.safetensors"))
    got = load_file(str(final / "model.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_different_config_in_the_same_run_folder_is_refused(tmp_path):
    train_tokenizer(TrainConfig(**TOK), tmp_path / "r", progress=False, stop_after=1)
    with pytest.raises(ValueError, match="different config"):
        train_tokenizer(TrainConfig(**{**TOK, "lr": 5e-4}), tmp_path / "r", progress=False)


def test_batch_order_is_a_function_of_step_and_rank():
    a = batch_indices(100, 8, 3, 0, 2, seed=1)
    assert torch.equal(a, batch_indices(100, 8, 3, 0, 2, seed=1))
    b = batch_indices(100, 8, 3, 1, 2, seed=1)
    assert not set(a.tolist()) & set(b.tolist())  # ranks take disjoint slices


BASE = dict(model_preset="tiny", steps=3, batch_size=4, image_size=16, num_examples=24, lr=1e-3, warmup_steps=1,
            log_every=1, sample_every=3, checkpoint_every=100)  # fmt: skip


def test_base_and_superres_stages_then_pipeline(tmp_path, tokenizer_dir, tiny_bert_dir):
    text = TextEncoderConfig(path=str(tiny_bert_dir), max_length=16)
    shards = tmp_path / "shards"
    base_config = TrainConfig(stage="base", base_codes=5, **BASE)
    base = train_transformer(base_config, tmp_path / "base", tokenizer_dir, shards, text, False)
    data = TokenShards(shards)
    vocabulary = load_file(str(tmp_path / "base" / "base-codes.safetensors"))
    allowed = set(vocabulary["allowed_codes"].tolist())
    assert len(allowed) <= 5 and set(vocabulary["ids_lo"].unique().tolist()) <= allowed
    assert vocabulary["ids_lo"].shape == data.ids_lo.shape
    assert len(data) == 24 and data.ids_lo.shape[1:] == (4, 4) and data.ids_hi.shape[1:] == (8, 8)
    assert (tmp_path / "base" / "samples-0000003.png").is_file()
    sr_config = TrainConfig(stage="sr", object_loss_weight=4.0, **BASE)
    weights = object_token_weights(sr_config, ShapesWorld(0), data)
    assert weights.shape == (24, 8, 8) and set(weights.unique().tolist()) == {1.0, 4.0}
    # area-normalised: a scene's object tokens weigh (large radius / its radius)^2 times more (small objects)
    scaled = object_token_weights(sr_config.replace(object_area_normalize=True), ShapesWorld(0), data)
    sizes = [ShapesWorld(0).example("train", int(i)).scene.objects[0].size for i in data.index]
    for grid, plain, size in zip(scaled, weights, sizes):
        factor = {"small": (0.2 / 0.12) ** 2, "large": 1.0, "pair": (0.2 / 0.13) ** 2}[size]
        assert torch.allclose(grid[plain > 1], torch.tensor(4.0 * factor)) and (grid[plain == 1] == 1).all()
    assert {"small", "large"} <= set(sizes)
    sr = train_transformer(sr_config, tmp_path / "sr", tokenizer_dir, shards, text, False)
    from musekit.config import SuperResConfig, TransformerConfig, VQConfig
    from musekit.io.checkpoint import load_component
    from musekit.models import MaskedTransformer, SuperResTransformer
    from musekit.pipeline import MusePipeline
    from musekit.text import build_text_encoder
    from musekit.tokenizer import VQModel

    pipe = MusePipeline(
        build_text_encoder(text),
        load_component(VQModel, VQConfig, tokenizer_dir),
        load_component(MaskedTransformer, TransformerConfig, base),
        load_component(SuperResTransformer, SuperResConfig, sr),
    )
    pipe.progress_bar = False
    assert set(pipe.transformer.config.allowed_codes) == allowed
    out = pipe("a red circle", generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (16, 16) and set(out.base_ids.unique().tolist()) <= allowed


def test_exact_shards_record_their_drawing(tmp_path, tokenizer_dir):
    from musekit.config import VQConfig
    from musekit.data.tokens import encode_shards
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    vq = load_component(VQModel, VQConfig, tokenizer_dir)
    exact = TokenShards(encode_shards(vq, ShapesWorld(0, jitter=0.0), tmp_path / "exact", 6, 16, progress=False))
    noisy = TokenShards(encode_shards(vq, ShapesWorld(0), tmp_path / "noisy", 6, 16, progress=False))
    assert exact.meta["jitter"] == 0.0 and noisy.meta["jitter"] == 1.0
    assert torch.equal(exact.index, noisy.index)  # the same scenes, drawn without noise
    with pytest.raises(Exception, match="jitter"):
        TrainConfig(stage="base", jitter=-0.5, **BASE)


def test_shards_rendered_in_worker_processes_equal_one_process(tmp_path, tokenizer_dir):
    from musekit.config import VQConfig
    from musekit.data.tokens import encode_shards
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    vq = load_component(VQModel, VQConfig, tokenizer_dir)
    world = ShapesWorld(0, jitter=0.0)
    one = TokenShards(encode_shards(vq, world, tmp_path / "one", 10, 16, batch_size=3, progress=False))
    two = TokenShards(encode_shards(vq, world, tmp_path / "two", 10, 16, batch_size=3, progress=False, workers=2))
    assert torch.equal(one.ids_lo, two.ids_lo) and torch.equal(one.ids_hi, two.ids_hi)
    assert torch.equal(one.index, two.index)


def test_a_shard_folder_being_written_refuses_a_second_writer(tmp_path, tokenizer_dir):
    # `musekit train` started on a folder that `musekit encode-shards` has not finished must not write into it too
    import json
    import socket
    import subprocess
    import sys

    from musekit.config import VQConfig
    from musekit.data.tokens import WRITER, encode_shards, shards_writer
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    vq = load_component(VQModel, VQConfig, tokenizer_dir)
    folder = tmp_path / "shards"
    folder.mkdir()
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / WRITER).write_text(json.dumps({"pid": live.pid, "host": host}))
        assert shards_writer(folder) == {"pid": live.pid, "host": host}
        with pytest.raises(FileExistsError, match=f"being written by process {live.pid}"):
            encode_shards(vq, ShapesWorld(0), folder, 4, 16, progress=False)
        assert not (folder / "meta.json").exists() and (folder / WRITER).exists()  # the writer's marker is left alone
    finally:
        live.kill()
        live.wait()
    # the writer was killed: its marker is stale, and encoding goes ahead and removes it
    assert shards_writer(folder) is None
    shards = TokenShards(encode_shards(vq, ShapesWorld(0), folder, 4, 16, progress=False))
    assert len(shards) == 4 and not (folder / WRITER).exists()


def test_training_randomness_follows_the_generator_not_the_device():
    from musekit.training.objectives import mask_tokens

    ids = torch.zeros(3, 16, dtype=torch.long)
    _, mask_a = mask_tokens(ids, 99, torch.Generator().manual_seed(5))
    _, mask_b = mask_tokens(ids, 99, torch.Generator().manual_seed(5))
    assert torch.equal(mask_a, mask_b) and mask_a.any()  # a CPU generator: the same masks wherever the ids live
    if torch.cuda.is_available():
        _, mask_gpu = mask_tokens(ids.cuda(), 99, torch.Generator().manual_seed(5))
        assert torch.equal(mask_gpu.cpu(), mask_a)


def test_ema_follows_the_model_to_its_device():
    from musekit.training.ema import EMA

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.5).to("cpu")
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.state_dict()["weight"].clone()
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["weight"], 0.5 * before + 0.5 * model.weight)


def test_shards_can_condition_on_what_the_base_tokenizer_draws(tmp_path, tokenizer_dir):
    """--lo-through: the low-resolution ids tokenize the base tokenizer's reconstruction, the high ones the render."""
    from musekit.config import VQConfig
    from musekit.data.tokens import encode_shards, render_stages
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    vq = load_component(VQModel, VQConfig, tokenizer_dir)
    world = ShapesWorld(0, jitter=0.0)
    plain = TokenShards(encode_shards(vq, world, tmp_path / "plain", 4, 16, progress=False))
    through = TokenShards(encode_shards(vq, world, tmp_path / "through", 4, 16, progress=False, lo_through=vq))
    assert through.meta["lo_through"] and not plain.meta["lo_through"]
    assert torch.equal(through.ids_hi, plain.ids_hi)
    with torch.no_grad():
        small = render_stages(world.examples("train", 4), 16)[1]
        drawn = vq.decode(vq.encode(small))
        expected = vq.encode(drawn.clamp(0, 1))
        upsampled = torch.nn.functional.interpolate(drawn, size=(16, 16), mode="bilinear", antialias=True)
        start = vq.encode(upsampled.clamp(0, 1))
    assert torch.equal(through.ids_lo.long(), expected.long())
    # and the start of the super-resolution stage at sr_strength < 1: the reconstruction upsampled and tokenized
    assert plain.ids_start is None and torch.equal(through.ids_start.long(), start.long())


@pytest.fixture(scope="module")
def start_shards(tmp_path_factory, tokenizer_dir):
    """24 scenes' shards through the tiny tokenizer (``--lo-through``), so they hold ``ids_start``."""
    from musekit.config import VQConfig
    from musekit.data.tokens import encode_shards
    from musekit.io.checkpoint import load_component
    from musekit.tokenizer import VQModel

    vq = load_component(VQModel, VQConfig, tokenizer_dir)
    return encode_shards(vq, ShapesWorld(0), tmp_path_factory.mktemp("start") / "shards", 24, 16, progress=False,
                         lo_through=vq)  # fmt: skip


def test_start_context_trains_the_superres_stage_on_the_upsampled_base_tokens(
    tmp_path, tokenizer_dir, tiny_bert_dir, start_shards
):
    from musekit.config import ConfigError

    text = TextEncoderConfig(path=str(tiny_bert_dir), max_length=16)
    with pytest.raises(ConfigError, match="super-resolution stage only"):
        TrainConfig(stage="base", start_context=0.5)
    with pytest.raises(ConfigError, match="start_context"):
        TrainConfig(stage="sr", start_context=1.5)
    config = TrainConfig(stage="sr", start_context=0.5, **BASE)
    with pytest.raises(ValueError, match="ids_start"):  # plain shards have no start tokens
        train_transformer(config, tmp_path / "plain-run", tokenizer_dir, tmp_path / "plain", text, False)
    assert train_transformer(config, tmp_path / "run", tokenizer_dir, start_shards, text, False).is_dir()


def test_start_context_max_mask_caps_the_masking_rate_of_the_blurry_samples(
    tmp_path, tokenizer_dir, tiny_bert_dir, start_shards, monkeypatch
):
    from musekit.config import ConfigError
    from musekit.training import loop

    with pytest.raises(ConfigError, match="start_context_max_mask"):
        TrainConfig(stage="sr", start_context=0.5, start_context_max_mask=0.0)
    with pytest.raises(ConfigError, match="needs start_context"):
        TrainConfig(stage="sr", start_context_max_mask=0.5)
    seen = []

    def spy(model, ids, *args, context_ids=None, ratios=None, **kwargs):
        seen.append((ids.flatten(1), context_ids.flatten(1), ratios))
        return loop_loss(model, ids, *args, context_ids=context_ids, ratios=ratios, **kwargs)

    loop_loss = loop.masked_modeling_loss
    monkeypatch.setattr(loop, "masked_modeling_loss", spy)
    text = TextEncoderConfig(path=str(tiny_bert_dir), max_length=16)
    config = TrainConfig(stage="sr", start_context=0.5, start_context_max_mask=0.25, **BASE)
    assert train_transformer(config, tmp_path / "run", tokenizer_dir, start_shards, text, False).is_dir()
    ratios = torch.cat([r for _, _, r in seen])
    blurry = torch.cat([(c != i).any(1) for i, c, _ in seen])  # samples shown (differing) start tokens
    assert blurry.any() and (~blurry).any()
    assert (ratios[blurry] <= 0.25).all()
    assert ratios[~blurry].max() > 0.25  # the other samples keep the schedule's full range
    seen.clear()  # no cap (1, the default): the loss draws its rates itself, as before the cap existed
    config = TrainConfig(stage="sr", start_context=0.5, **BASE)
    assert train_transformer(config, tmp_path / "uncapped", tokenizer_dir, start_shards, text, False).is_dir()
    assert seen and all(r is None for _, _, r in seen)


def test_two_process_torchrun_keeps_replicas_identical(tmp_path, tokenizer_dir):
    config = TrainConfig(stage="base", **BASE)
    config.save(tmp_path / "base.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "musekit", "train", "--stage", "base", "--config", str(tmp_path / "base.json"),
           "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "ddp"), "--threads", "1"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    sums = [(tmp_path / "ddp" / f"replica-{r}.sha256").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]


def test_init_from_starts_a_new_run_from_earlier_weights(tmp_path, tokenizer_dir):
    from musekit.config import VQConfig
    from musekit.tokenizer import VQModel
    from musekit.training.runner import Runner

    config = TrainConfig(**{**TOK, "init_from": str(tokenizer_dir)})
    model = VQModel(VQConfig.preset("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer, start = Runner(config, tmp_path / "r").setup(model, optimizer)
    ref = load_file(str(tokenizer_dir / "model.safetensors"))
    assert start == 0 and all(torch.equal(ref[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        bad = TrainConfig(**{**TOK, "init_from": str(tmp_path / "nowhere")})
        Runner(bad, tmp_path / "s").setup(VQModel(VQConfig.preset("tiny")), optimizer)


def test_init_partial_loads_what_matches_and_leaves_the_rest(tmp_path, tokenizer_dir):
    """A new codebook (e.g. a base stage with a tokenizer of its own) keeps the matching tensors of earlier weights."""
    from musekit.config import VQConfig
    from musekit.tokenizer import VQModel
    from musekit.training.runner import Runner

    config = TrainConfig(**{**TOK, "init_from": str(tokenizer_dir)})
    bigger = VQConfig.preset("tiny").replace(codebook_size=24)
    with pytest.raises(ValueError, match="shape"):  # strict by default
        strict = VQModel(bigger)
        Runner(config, tmp_path / "strict").setup(strict, torch.optim.AdamW(strict.parameters()))
    torch.manual_seed(5)
    model = VQModel(bigger)
    fresh_codes = model.quantizer.state_dict()["embedding.weight"].clone()
    partial = TrainConfig(**{**TOK, "init_from": str(tokenizer_dir), "init_partial": True})
    model, _, _ = Runner(partial, tmp_path / "partial").setup(model, torch.optim.AdamW(model.parameters()))
    ref = load_file(str(tokenizer_dir / "model.safetensors"))
    state = model.state_dict()
    assert torch.equal(state["encoder.conv_in.weight"], ref["encoder.conv_in.weight"])
    assert torch.equal(state["quantizer.embedding.weight"], fresh_codes)  # (24, d) vs (16, d): left as it was


def test_a_base_only_tokenizer_batch_is_whole_downsampled_renders():
    world = ShapesWorld(0, 0.4)
    config = TrainConfig(**{**TOK, "crop_fraction": 0.0})
    from musekit.data.renders import render_examples, to_float
    from musekit.training.tokenizer_loop import tokenizer_batch

    batch = tokenizer_batch(world, config, 0, 0, 1, torch.Generator().manual_seed(0))
    full = to_float(render_examples(world.examples("train", 4, 0), 16))
    small = torch.nn.functional.interpolate(full, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert batch.shape == (4, 3, 8, 8) and torch.allclose(batch, small)
    with pytest.raises(Exception, match="crop_fraction"):
        TrainConfig(**{**TOK, "crop_fraction": 1.5})


def test_freeze_codes_retrains_only_the_decoder(tmp_path, tokenizer_dir):
    """A decoder retrained on frozen codes: every token keeps its meaning (encoder, quant_conv, codebook equal)."""
    from musekit.config import ConfigError

    config = TrainConfig(**{**TOK, "init_from": str(tokenizer_dir), "freeze_codes": True, "exact_fraction": 0.5})
    final = train_tokenizer(config, tmp_path / "dec", progress=False)
    ref = load_file(str(tokenizer_dir / "model.safetensors"))
    got = load_file(str(final / "model.safetensors"))
    kept = [k for k in ref if not k.startswith(("decoder.", "post_quant_conv.")) and "usage" not in k]
    assert kept and all(torch.equal(ref[k], got[k]) for k in kept)
    assert any(not torch.equal(ref[k], got[k]) for k in ref if k.startswith("decoder."))
    with pytest.raises(ConfigError, match="init_from"):
        train_tokenizer(TrainConfig(**{**TOK, "freeze_codes": True}), tmp_path / "none", progress=False)


def test_exact_fraction_renders_the_first_scenes_of_a_batch_exactly():
    from musekit.data.renders import render_examples, to_float
    from musekit.training.tokenizer_loop import tokenizer_batch

    world, exact = ShapesWorld(0, 0.4), ShapesWorld(0, 0.4, 0.0)
    config = TrainConfig(**{**TOK, "crop_fraction": 0.0, "exact_fraction": 0.5, "image_size": 32})
    batch = tokenizer_batch(world, config, 3, 0, 1, torch.Generator().manual_seed(0), exact)

    def small(examples):
        full = to_float(render_examples(examples, 32))
        return torch.nn.functional.interpolate(full, size=(16, 16), mode="bilinear", antialias=True)

    assert torch.allclose(batch[:2], small(exact.examples("train", 2, 12)))
    assert torch.allclose(batch[2:], small(world.examples("train", 4, 12)[2:]))
    assert not torch.allclose(batch[:2], small(world.examples("train", 2, 12)))
    with pytest.raises(Exception, match="exact_fraction"):
        TrainConfig(**{**TOK, "exact_fraction": 2.0})


def test_a_decoder_can_be_wider_and_deeper_than_the_encoder():
    from musekit.config import ConfigError, VQConfig
    from musekit.tokenizer import VQModel

    base = VQConfig.preset("tiny")
    wide = base.replace(decoder_channels=2 * base.base_channels, decoder_res_blocks=base.num_res_blocks + 1)
    a, b = VQModel(base), VQModel(wide)
    assert b.decoder.conv_in.out_channels == 2 * a.decoder.conv_in.out_channels
    assert sum(p.numel() for p in b.decoder.parameters()) > sum(p.numel() for p in a.decoder.parameters())
    b.encoder.load_state_dict(a.encoder.state_dict())  # the encoder is untouched by the decoder's size
    assert (
        b.decode(torch.zeros(1, 2, 2, dtype=torch.long)).shape == a.decode(torch.zeros(1, 2, 2, dtype=torch.long)).shape
    )
    with pytest.raises(ConfigError, match="decoder"):
        base.replace(decoder_channels=-1)


def test_bf16_mixed_precision_trains_fp32_weights_under_bf16_autocast(tmp_path, tokenizer_dir, tiny_bert_dir):
    from musekit.training.runner import Runner

    text = TextEncoderConfig(path=str(tiny_bert_dir), max_length=16)
    config = TrainConfig(stage="base", mixed_precision="bf16", **{**BASE, "sample_every": 0})
    final = train_transformer(config, tmp_path / "bf16", tokenizer_dir, tmp_path / "shards", text, False)
    weights = load_file(str(final / "model.safetensors"))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0 < r["loss"] < 100 for r in rows)
    runner = Runner(config, tmp_path / "bf16")
    with runner.autocast():
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    with Runner(config.replace(mixed_precision="no"), tmp_path / "fp32").autocast():
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.float32
    # the arithmetic's precision may change when a run resumes (another machine); the recipe may not
    Runner(config.replace(mixed_precision="no"), tmp_path / "bf16")
    with pytest.raises(ValueError, match=r"different config \(lr\)"):
        Runner(config.replace(lr=0.5), tmp_path / "bf16")
    with pytest.raises(Exception, match="mixed_precision must be one of"):
        TrainConfig(mixed_precision="fp16")
    with pytest.raises(Exception, match="applies to the transformer stages"):
        TrainConfig(**{**TOK, "mixed_precision": "bf16"})
