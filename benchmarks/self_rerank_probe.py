"""Headroom of best-of-K by the model's own score: would reranking K drafts fix held-out shapes or two concepts?

Each draft's base-stage tokens are scored by the base transformer itself: a random half of them masked (``--masks``
times, fixed seed), the summed log-probability of the true tokens under the prompt (``cond``) and that minus the same
under the empty prompt (``pmi``). Prints the share right for the first draft, the mean over drafts, any draft
(oracle), and the draft each score ranks first.

* ``heldout``: K base-stage drafts of each held-out dev scene (canonical caption), read by the checker at 64 px.
* ``pairs``: the two-concept prompts of ``two_concept_probe.py`` (concept files from its ``--cache``, bias 0.8),
  ``--samples`` groups of K final images per prompt, scored by the eval's pair rule.

Usage: python benchmarks/self_rerank_probe.py heldout|pairs [--k 4] [--num 240] [--samples 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from concept_probe_setup import examples_and_references, load_pipeline_and_checker  # noqa: E402
from two_concept_probe import pair_prompts  # noqa: E402

from musekit.data.renders import labels_of  # noqa: E402
from musekit.data.shapes import ShapesWorld  # noqa: E402
from musekit.eval.personalize_eval import pair_success  # noqa: E402
from musekit.personalize.concept import Concept  # noqa: E402
from musekit.sampling.options import SamplingOptions  # noqa: E402


@torch.no_grad()
def scores(model, cache, ids: torch.Tensor, masks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, pmi) per row of ``ids`` (N, h, w); ``cache`` holds [empty prompt (N) ; prompt (N)]."""
    flat = ids.reshape(len(ids), -1)
    generator = torch.Generator().manual_seed(1234)
    cond, uncond = torch.zeros(len(ids)), torch.zeros(len(ids))
    for _ in range(masks):
        hidden = torch.rand(flat.shape, generator=generator) < 0.5
        masked = torch.where(hidden, torch.full_like(flat, model.config.mask_token_id), flat).view_as(ids)
        logp = model(torch.cat([masked, masked]), cache=cache).float().log_softmax(-1)
        true = logp.gather(-1, torch.cat([flat, flat]).unsqueeze(-1)).squeeze(-1) * torch.cat([hidden, hidden])
        u, c = true.sum(1).chunk(2)
        cond, uncond = cond + c, uncond + u
    return cond, cond - uncond


def report(ok: torch.Tensor, cond: torch.Tensor, pmi: torch.Tensor) -> None:
    rows = torch.arange(len(ok))
    print(f"first {ok[:, 0].float().mean():.3f}  mean {ok.float().mean():.3f}  oracle {ok.any(1).float().mean():.3f}"
          f"  rerank by cond {ok[rows, cond.argmax(1)].float().mean():.3f}"
          f"  by pmi {ok[rows, pmi.argmax(1)].float().mean():.3f}")  # fmt: skip


def heldout(pipe, checker, args) -> None:
    examples = ShapesWorld(0).examples("heldout", args.num, args.start)
    captions = [e.scene.canonical_caption() for e in examples]
    options = SamplingOptions.resolve(pipe.config)
    model, k = pipe.transformer, args.k
    ok, cond, pmi = [], [], []
    for start in range(0, args.num, 8):
        prompts = captions[start : start + 8]
        text = pipe.encode_prompt(prompts)
        drafts = torch.stack([pipe.generate_tokens(model, text, len(prompts), options,
                                                   torch.Generator().manual_seed(start + 100000 * j))
                              for j in range(k)], 1)  # fmt: skip
        shapes = checker.predict(pipe.vqgan.decode(drafts.flatten(0, 1)))["shape"].view(len(prompts), k)
        ok.append(shapes == labels_of(examples[start : start + 8])["shape"][:, None])
        with torch.no_grad():
            c, p = scores(model, model.precompute(text.repeat_interleave(k)), drafts.flatten(0, 1), args.masks)
        cond.append(c.view(-1, k))
        pmi.append(p.view(-1, k))
    report(torch.cat(ok), torch.cat(cond), torch.cat(pmi))


def pairs(pipe, checker, args) -> None:
    names = args.concepts.split(",")
    _, refs = examples_and_references(pipe, checker, names)
    concepts = {n: Concept.load(Path(args.cache) / f"{n}.safetensors") for n in names}
    model, n = pipe.transformer, args.k * args.samples
    ok, cond, pmi = [], [], []
    for a in names:
        for b in names:
            if a == b:
                continue
            both = [concepts[a], concepts[b]]
            for i, prompt in enumerate(pair_prompts(a, b, f"<{a}>", f"<{b}>")):
                out = pipe(prompt, num_images_per_prompt=n, generator=torch.Generator().manual_seed(i),
                           output_type="pt", concepts=both, concept_bias=0.8)  # fmt: skip
                ok.append(pair_success(checker, out.images.cpu(), refs[a], refs[b]).view(args.samples, args.k))
                with torch.no_grad(), pipe.using_concepts(prompt, both, n, 0.8):
                    cache = pipe._concept_call.cache(pipe, model, pipe.encode_prompt([prompt], None, n), None)
                    c, p = scores(model, cache, out.base_ids, args.masks)
                cond.append(c.view(args.samples, args.k))
                pmi.append(p.view(args.samples, args.k))
    report(torch.cat(ok), torch.cat(cond), torch.cat(pmi))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["heldout", "pairs"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--num", type=int, default=240)
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--concepts", default="bullseye,diamond,crescent")
    parser.add_argument("--cache", default="runs/two-concept", help="concept files of two_concept_probe.py")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pipe, checker = load_pipeline_and_checker(args.threads)
    (heldout if args.case == "heldout" else pairs)(pipe, checker, args)


if __name__ == "__main__":
    main()
