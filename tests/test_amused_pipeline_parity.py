"""A diffusers-layout aMUSEd folder loads into MusePipeline and reproduces AmusedPipeline's token ids."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="parity tests need the diffusers test extra")


def tiny_amused_folder(path, sample_size=4, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    transformer = diffusers.UVit2DModel(hidden_size=8, cond_embed_dim=8, micro_cond_encode_dim=2,
                                        micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32, codebook_size=8,
                                        in_channels=8, block_out_channels=8, num_res_blocks=1, downsample=True,
                                        upsample=True, block_num_heads=1, num_hidden_layers=1, num_attention_heads=1,
                                        attention_dropout=0.0, intermediate_size=8, layer_norm_eps=1e-06,
                                        ln_elementwise_affine=True, sample_size=sample_size)  # fmt: skip
    vqvae = diffusers.VQModel(block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2,
                              up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1,
                              norm_num_groups=4, num_vq_embeddings=8, mid_block_add_attention=False,
                              lookup_from_codebook=True)  # fmt: skip
    with torch.no_grad():
        for p in list(transformer.parameters()) + list(vqvae.parameters()):
            p.normal_(0, 0.3)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (path / "tok").mkdir(parents=True)
    (path / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (path / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "tok" / "vocab.json"), str(path / "tok" / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        projection_dim=8, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))  # fmt: skip
    scheduler = diffusers.AmusedScheduler(mask_token_id=31)
    pipe = diffusers.AmusedPipeline(vqvae=vqvae, tokenizer=tokenizer, text_encoder=text_encoder,
                                    transformer=transformer, scheduler=scheduler)  # fmt: skip
    pipe.save_pretrained(path / "amused")
    return path / "amused"


@pytest.mark.parametrize("steps, guidance", [(4, 3.0), (2, 1.0), (6, 10.0)])
def test_ids_match_amused_pipeline(tmp_path, steps, guidance):
    from musekit import MusePipeline

    folder = tiny_amused_folder(tmp_path)
    reference = diffusers.AmusedPipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    expected = reference(["a cat", "dog"], num_inference_steps=steps, guidance_scale=guidance,
                         generator=torch.Generator().manual_seed(3), output_type="latent").images  # fmt: skip
    ours = MusePipeline.from_pretrained(folder, scheduler="amused")
    ours.progress_bar = False
    ids = ours(["a cat", "dog"], num_inference_steps=steps, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(3), output_type="ids").ids  # fmt: skip
    assert torch.equal(ids, expected)


def test_micro_conditioning_options_match_amused_pipeline(tmp_path):
    from musekit import MusePipeline

    folder = tiny_amused_folder(tmp_path)
    micro = {"micro_conditioning_aesthetic_score": 3, "micro_conditioning_crop_coord": (2, 5)}
    reference = diffusers.AmusedPipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    expected = reference("a cat", num_inference_steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(1),
                         output_type="latent", **micro).images  # fmt: skip
    ours = MusePipeline.from_pretrained(folder, scheduler="amused")
    ours.progress_bar = False
    run = lambda **kw: ours("a cat", num_inference_steps=4, guidance_scale=3.0,  # noqa: E731
                            generator=torch.Generator().manual_seed(1), output_type="ids", **kw).ids  # fmt: skip
    assert torch.equal(run(**micro), expected)
    assert not torch.equal(run(), run(**micro))  # the options reach the model


def test_convert_round_trip_and_export_loads_in_diffusers(tmp_path):
    from musekit import MusePipeline
    from musekit.io.convert_amused import export_amused

    folder = tiny_amused_folder(tmp_path)
    ours = MusePipeline.from_pretrained(folder, scheduler="amused")
    ours.progress_bar = False
    ours.save_pretrained(tmp_path / "musekit")
    again = MusePipeline.from_pretrained(tmp_path / "musekit")
    again.progress_bar = False
    first = ours("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="ids")
    second = again("a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="ids")
    assert torch.equal(first.ids, second.ids)
    export_amused(again, tmp_path / "back")
    reloaded = diffusers.AmusedPipeline.from_pretrained(tmp_path / "back")
    assert reloaded.transformer.config.codebook_size == 8


def test_perfusion_learns_and_applies_a_concept_on_an_amused_model(tmp_path):
    from musekit import MusePipeline
    from musekit.personalize.concept import Concept

    folder = tiny_amused_folder(tmp_path)
    pipe = MusePipeline.from_pretrained(folder, scheduler="amused")
    pipe.progress_bar = False
    pipe.estimate_covariance(["a cat", "a dog on a mat", "the big red cat"])
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, pipe.image_size, pipe.image_size, generator=g) for _ in range(2)]
    from musekit.personalize.tokens import superclass_ids

    concept = pipe.learn_concept(images, "<kit>", "cat", steps=2, progress=False)
    layers = len(pipe.transformer.transformer_layers)  # the layers whose K/V read the projected text
    pieces = len(superclass_ids(pipe.text_encoder, "cat"))  # the tiny CLIP vocabulary may split it
    assert concept.value_outputs["transformer"].shape == (layers, pieces, pipe.transformer.config.hidden_size)
    path = concept.save(tmp_path / "kit.safetensors")
    assert Concept.load(path).token == "<kit>"

    def run(**kwargs):
        return pipe("a <kit>" if kwargs else "a cat", num_inference_steps=3, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), output_type="ids", **kwargs).ids  # fmt: skip

    plain = run()
    for locking in ("local", "global"):
        ids = run(concepts=[path], concept_bias=0.3, key_locking=locking)
        assert ids.shape == plain.shape
    # the edit changes the transformer layers' cached values only (the conv stages read other input spaces)
    with pipe.using_concepts("a <kit>", [path], bias=0.0, temperature=0.1) as call:
        text = pipe.encode_prompt(["a <kit>"], guidance_scale=3.0)
        edited = call.cache(pipe, pipe.transformer, text, None)
        unedited = pipe.transformer.precompute(text)
    assert not torch.allclose(edited.values[-1][1], unedited.values[-1][1])  # conditional row, last layer
    conv = 2 * len(pipe.transformer.down_block.attention_blocks)
    assert conv == 0 or torch.allclose(edited.values[0], unedited.values[0])
    # the call leaves the weights untouched
    assert all(type(a.to_k) is torch.nn.Linear for a in pipe.transformer.text_attentions)
