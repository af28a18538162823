"""`musekit eval personalize`: Perfusion and its baselines on concepts the default model never saw.

For each concept and method: training seconds, file bytes, concept similarity (cosine of checker embeddings of the
object region in generated images, the cell the object was drawn in, against the concept images' object regions: the
analogue of CLIP-I/DINO) and text fidelity (the prompt's position, read from the pixels, and background, and a second
plain object, read right by the checker). Perfusion is swept over the inference bias beta with local and global
key-locking and trained-K; two concepts in one prompt are scored by whether each object region is closer to its own
concept than to the other.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from musekit.data.concepts import CONCEPTS, backgrounds_for, cell_box, concept_examples, concept_scene
from musekit.data.drawing import render
from musekit.data.shapes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, Scene, ShapeObject, with_articles
from musekit.editing.masks import image_to_tensor
from musekit.eval.checker import ShapeChecker
from musekit.personalize.rank_one import DEFAULT_BIAS

ONE_OBJECT_POSITIONS = ("top left", "center", "bottom right", "top right", "left", "bottom", "right", "top")
SECOND_OBJECTS = (("green", "star"), ("blue", "square"), ("white", "cross"), ("yellow", "heart"))


@dataclass(frozen=True)
class PersonalizeEvalSettings:
    concepts: tuple[str, ...] = ("bullseye", "diamond", "crescent")
    betas: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    default_beta: float = DEFAULT_BIAS
    images_per_concept: int = 5
    steps: int = 60
    baseline_steps: int = 60
    seed: int = 0
    samples_per_prompt: int = 2  # images per evaluation prompt (different seeds)
    two_concept_samples: int = 6  # images per two-concept prompt (6 ordered pairs x 4 backgrounds x 6 = 144)
    captions: bool = True  # train every method on per-image captions (else on generic templates, "a {}" ...)


def region_embeddings(checker: ShapeChecker, images: torch.Tensor, positions: list[str]) -> torch.Tensor:
    """Unit checker features of each image's object cell: (N, 3, S, S) -> (N, D)."""
    size = images.shape[-1]
    crops = []
    for image, position in zip(images, positions):
        x0, y0, x1, y1 = cell_box(position, size)
        crops.append(F.interpolate(image[None, :, y0:y1, x0:x1], size=(64, 64), mode="bilinear", antialias=True))
    return F.normalize(checker.embed(torch.cat(crops)), dim=-1)


def concept_references(checker: ShapeChecker, examples: list) -> torch.Tensor:
    """Unit checker features of the concept's object cell in each of its training images (``concept_examples``
    rows): what generated images are compared with. (N, D)"""
    images = torch.cat([image_to_tensor(image) for image, _, _ in examples])
    return region_embeddings(checker, images, [position for _, position, _ in examples])


def foreground_in_cells(images: torch.Tensor, positions: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N, len(positions)): how far each position's cell is, on average, from the
    background colour (each image's median colour; the evaluation's backgrounds are plain)."""
    size = images.shape[-1]
    background = images.flatten(2).median(dim=-1).values[:, :, None, None]
    distance = (images - background).abs().sum(1)  # (N, S, S)
    columns = []
    for position in positions:
        x0, y0, x1, y1 = cell_box(position, size)
        columns.append(distance[:, y0:y1, x0:x1].mean(dim=(1, 2)))
    return torch.stack(columns, 1)


def object_positions(images: torch.Tensor) -> torch.Tensor:
    """(N,) index into ``POSITIONS`` of each one-object image's object: the cell farthest from the background.
    Read from the pixels, not from the checker's position head, which was trained on the shapes world's own shapes
    and misplaces a novel one (exact renders of the orange crescent at its 8 prompt positions, large and small: 13
    of 16 read right)."""
    return foreground_in_cells(images, POSITIONS).argmax(1)


def pair_cells(images: torch.Tensor) -> list[tuple[str, str]]:
    """The (left, right) cells of each image's "X left of Y" pair: (N, 3, S, S) in [0, 1] -> N cell pairs. The shapes
    world puts such a pair in any of the three rows, so the row is read from the image: the row whose left and right
    cells together are farthest from the background (the checker's position head found the row of an exact render
    of the crescent left of the bullseye 5 times in 12)."""
    rows = [(POSITIONS[3 * row], POSITIONS[3 * row + 2]) for row in range(3)]
    scores = foreground_in_cells(images, [cell for row in rows for cell in row]).view(-1, 3, 2).sum(-1)
    return [rows[row] for row in scores.argmax(1).tolist()]


def prompts_for(token: str, name: str) -> list[tuple[str, dict]]:
    """One-object prompts (position, background) and two-object prompts (a plain second object)."""
    backgrounds = backgrounds_for(name)
    out = []
    for k, position in enumerate(ONE_OBJECT_POSITIONS):
        background = backgrounds[k % len(backgrounds)]
        out.append((with_articles(f"a {token} at the {position} on a {background} background"),
                    {"position": position, "background": background}))  # fmt: skip
    for k, (color, shape) in enumerate(SECOND_OBJECTS):
        background = [b for b in backgrounds if b != color][k % (len(backgrounds) - 1)]
        out.append((with_articles(f"a {token} left of a {color} {shape} on a {background} background"),
                    {"position": "left", "background": background, "color2": color, "shape2": shape}))  # fmt: skip
    return out


def prompt_followed(predicted: dict[str, torch.Tensor], specs: list[dict]) -> list[bool]:
    """Per image, whether the checker's ``predicted`` attributes match the prompt's non-concept parts: background
    and the concept's position (one-object prompts), or background and the second object's colour and shape
    (two-object prompts)."""
    out = []
    for i, spec in enumerate(specs):
        ok = BACKGROUNDS[predicted["background"][i]] == spec["background"]
        if "color2" in spec:
            ok &= list(COLORS)[predicted["color2"][i]] == spec["color2"]
            ok &= SHAPES[predicted["shape2"][i]] == spec["shape2"]
        else:
            ok &= POSITIONS[predicted["position"][i]] == spec["position"]
        out.append(bool(ok))
    return out


SCORES = ("concept_similarity", "similarity_prompt_cell", "text_fidelity", "text_fidelity_one", "text_fidelity_two")


def similarity_bounds(checker: ShapeChecker, name: str, references: torch.Tensor) -> dict[str, float]:
    """The scale of concept similarity for ``name`` on its one-object prompts: "truth" = the concept itself drawn at
    each prompt's position and background (what a perfect method scores), "superclass" = the superclass shape in the
    concept's main colour there instead (what a method that only draws the superclass scores)."""
    main = min(COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLORS[c], CONCEPTS[name]["colors"][0])))
    specs = [spec for _, spec in prompts_for(f"<{name}>", name) if "color2" not in spec]
    truth = [concept_scene(name, s["position"], s["background"]) for s in specs]
    superclass = [render(Scene((ShapeObject(CONCEPTS[name]["shape"], main, "large", s["position"]),),
                               s["background"])) for s in specs]  # fmt: skip
    positions = [s["position"] for s in specs]
    out = {}
    for key, images in (("truth", truth), ("superclass", superclass)):
        batch = torch.cat([image_to_tensor(i) for i in images])
        out[key] = (region_embeddings(checker, batch, positions) @ references.t()).mean().item()
    return out


def text_fidelity_scores(followed: list[bool], specs: list[dict]) -> dict[str, float]:
    """Share of prompts followed: all, one-object prompts only, two-object prompts only (these need the second
    object's shape, so they also measure whether the model draws shapes)."""
    two = ["color2" in spec for spec in specs]

    def share(values: list[bool]) -> float:
        return sum(values) / len(values) if values else float("nan")

    return {
        "text_fidelity": share(followed),
        "text_fidelity_one": share([f for f, t in zip(followed, two) if not t]),
        "text_fidelity_two": share([f for f, t in zip(followed, two) if t]),
    }


def generate(pipe, prompts: list[str], seed: int, samples: int = 1, **kwargs) -> torch.Tensor:
    """``samples`` images per prompt, prompt by prompt, on the CPU: (len(prompts) * samples, 3, S, S)."""
    out = []
    for k, prompt in enumerate(prompts):
        result = pipe(prompt, num_images_per_prompt=samples, generator=torch.Generator().manual_seed(seed + k),
                      output_type="pt", **kwargs)  # fmt: skip
        out.append(result.images.cpu())
    return torch.cat(out)


def score(pipe, checker, token, name, references, seed, samples: int = 1, keep: list | None = None, **kwargs) -> dict:
    """The scores of one method on ``name``'s prompts; ``keep`` (a list) receives the first sample of the first
    one-object and the first two-object prompt, for the sample grid."""
    items = prompts_for(token, name)
    images = generate(pipe, [p for p, _ in items], seed, samples, **kwargs)
    specs = [s for _, s in items for _ in range(samples)]
    if keep is not None:
        keep.extend([images[0], images[len(ONE_OBJECT_POSITIONS) * samples]])
    # positions are read from the pixels (``object_positions``, ``pair_cells``): the checker's head misreads novel
    # shapes. Similarity is read where the concept was drawn: in a one-object image the object's cell (whether that is
    # the prompt's position is text fidelity's business), in "<c> left of a ..." the left cell of the pair's row;
    # "similarity_prompt_cell" reads the prompt's cell instead (what the harness read before 2026-11-26), so that an
    # object drawn in the wrong place also costs similarity.
    predicted = {**checker.predict(images), "position": object_positions(images)}
    cells = pair_cells(images)
    drawn = [cell[0] if "color2" in spec else POSITIONS[index]
             for spec, cell, index in zip(specs, cells, predicted["position"].tolist())]  # fmt: skip
    asked = [cell[0] if "color2" in spec else spec["position"] for spec, cell in zip(specs, cells)]
    similarity = (region_embeddings(checker, images, drawn) @ references.t()).mean().item()
    at_prompt = (region_embeddings(checker, images, asked) @ references.t()).mean().item()
    return {"concept_similarity": similarity, "similarity_prompt_cell": at_prompt,
            **text_fidelity_scores(prompt_followed(predicted, specs), specs)}  # fmt: skip


GRID_METHODS = ("perfusion-local", "perfusion-global", "trained-k", "textual-inversion", "custom-diffusion",
                "dreambooth")  # fmt: skip


def sample_grid(samples: dict) -> tuple[torch.Tensor, int]:
    """The images of ``evaluate_personalization(..., samples=...)`` as a grid tensor (N, 3, S, S) and its column
    count: per concept two rows (a one-object and a two-object prompt), each [a concept image | one sample per
    method in ``GRID_METHODS`` at the default beta]; then the two-concept samples, one per ordered pair."""
    columns = 1 + len(GRID_METHODS)
    rows = []
    for by_method in samples["concepts"].values():
        references = by_method["references"]
        for k in range(2):
            rows.append([references[k], *(by_method[m][k] for m in GRID_METHODS)])
    pairs = list(samples.get("two_concepts", {}).values())
    for start in range(0, len(pairs), columns):
        chunk = pairs[start : start + columns]
        rows.append(chunk + [torch.ones_like(chunk[0])] * (columns - len(chunk)))
    return torch.stack([image for row in rows for image in row]), columns


def evaluate_personalization(pipe, checker: ShapeChecker, settings: PersonalizeEvalSettings | None = None,
                             progress: bool = True, samples: dict | None = None) -> tuple[dict, dict]:  # fmt: skip
    """Returns (report, learned concepts by (name, method)); a ``samples`` dict is filled with images for
    ``sample_grid``."""
    from musekit.personalize.baselines import BASELINES, learn_baseline

    settings = settings or PersonalizeEvalSettings()
    pipe.progress_bar = False
    report: dict = {"settings": settings.__dict__, "concepts": {}}
    learned: dict = {}
    refs: dict = {}
    for name in settings.concepts:
        token, superclass = f"<{name}>", CONCEPTS[name]["superclass"]
        examples = concept_examples(name, settings.images_per_concept, pipe.image_size, settings.seed)
        images = [image for image, _, _ in examples]
        captions = [text for _, _, text in examples] if settings.captions else None
        refs[name] = concept_references(checker, examples)
        rows = {"bounds": similarity_bounds(checker, name, refs[name])}
        kept: dict = {"references": [image_to_tensor(images[k])[0] for k in range(2)]}
        for method in ("perfusion", "trained-k", *BASELINES):
            start = time.perf_counter()
            if method in ("perfusion", "trained-k"):
                variant = "local" if method == "perfusion" else "trained-k"
                concept = pipe.learn_concept(images, token, superclass, settings.steps, variant, progress=progress,
                                             captions=captions)  # fmt: skip
            else:
                concept = learn_baseline(pipe, images, token, superclass, method, settings.baseline_steps,
                                         progress=progress, captions=captions)  # fmt: skip
            seconds = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                size = concept.save(Path(tmp) / "c.safetensors").stat().st_size
            learned[(name, method)] = concept
            row = {"train_seconds": seconds, "file_bytes": size}
            if method in ("perfusion", "trained-k"):
                lockings = ("local", "global") if method == "perfusion" else ("local",)
                for locking in lockings:
                    label = f"perfusion-{locking}" if method == "perfusion" else method
                    row[f"sweep_{locking}"] = {
                        str(beta): score(
                            pipe,
                            checker,
                            token,
                            name,
                            refs[name],
                            settings.seed,
                            settings.samples_per_prompt,
                            keep=kept.setdefault(label, []) if beta == settings.default_beta else None,
                            concepts=[concept],
                            concept_bias=beta,
                            key_locking=locking,
                        )  # fmt: skip
                        for beta in settings.betas
                    }
            else:
                row["scores"] = score(pipe, checker, token, name, refs[name], settings.seed,
                                      settings.samples_per_prompt, keep=kept.setdefault(method, []),
                                      concepts=[concept])  # fmt: skip
            rows[method] = row
        report["concepts"][name] = rows
        if samples is not None:
            samples.setdefault("concepts", {})[name] = kept
    pairs: dict | None = {} if samples is not None else None
    report["two_concepts"] = two_concept_rate(pipe, checker, learned, refs, settings, keep=pairs)
    if samples is not None:
        samples["two_concepts"] = pairs
    report["summary"] = summarize(report, settings)
    return report, learned


def two_concept_rate(pipe, checker, learned, refs, settings, keep: dict | None = None) -> dict:
    """Both concepts recognisable: each object cell is closer to its own concept's references than the other's. The
    backgrounds are four on which both concepts stay visible (none of their colours), as for one concept. ``keep``
    (a dict) receives the first image of each ordered pair."""
    names = list(settings.concepts)
    results = {}
    for a, b in [(names[i], names[j]) for i in range(len(names)) for j in range(len(names)) if i != j]:
        concepts = [learned[(a, "perfusion")], learned[(b, "perfusion")]]
        backgrounds = [bg for bg in backgrounds_for(a) if bg in backgrounds_for(b)][:4]
        prompts = [with_articles(f"a <{a}> left of a <{b}> on a {bg} background") for bg in backgrounds]
        images = generate(pipe, prompts, settings.seed, settings.two_concept_samples, concepts=concepts,
                          concept_bias=settings.default_beta)  # fmt: skip
        results[f"{a}+{b}"] = pair_success(checker, images, refs[a], refs[b]).float().mean().item()
        if keep is not None:
            keep[f"{a}+{b}"] = images[0]
    results["mean"] = sum(results.values()) / len(results)
    return results


def pair_success(checker, images: torch.Tensor, refs_left: torch.Tensor, refs_right: torch.Tensor) -> torch.Tensor:
    """(N,) bool: in each "A left of B" image, the left cell is closer to A's references than to B's and the right
    cell to B's than to A's (the pair may be drawn in any row: read from the image)."""
    return pair_rule(checker, images, pair_cells(images), refs_left, refs_right)


def pair_rule(checker, images: torch.Tensor, cells: list[tuple[str, str]], refs_left: torch.Tensor,
              refs_right: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``pair_success`` with each image's (left, right) ``cells`` given."""
    left = region_embeddings(checker, images, [cell[0] for cell in cells])
    right = region_embeddings(checker, images, [cell[1] for cell in cells])
    ok_left = (left @ refs_left.t()).mean(1) > (left @ refs_right.t()).mean(1)
    ok_right = (right @ refs_right.t()).mean(1) > (right @ refs_left.t()).mean(1)
    return ok_left & ok_right


def summarize(report: dict, settings: PersonalizeEvalSettings) -> dict:
    """Mean over concepts of each method (Perfusion at the default beta) and of each sweep point."""
    concepts = report["concepts"]
    beta = str(settings.default_beta)

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    summary = {"bounds": {k: mean(concepts[c]["bounds"][k] for c in concepts) for k in ("truth", "superclass")}}
    for method in ("textual-inversion", "custom-diffusion", "dreambooth"):
        summary[method] = {k: mean(concepts[c][method]["scores"][k] for c in concepts) for k in SCORES}
        summary[method]["train_seconds"] = mean(concepts[c][method]["train_seconds"] for c in concepts)
        summary[method]["file_bytes"] = mean(concepts[c][method]["file_bytes"] for c in concepts)
    for method, locking in (("perfusion", "local"), ("perfusion", "global"), ("trained-k", "local")):
        key = f"{method}-{locking}" if method == "perfusion" else method
        summary[key] = {"sweep": {b: {k: mean(concepts[c][method][f"sweep_{locking}"][b][k] for c in concepts)
                                      for k in SCORES}
                                  for b in map(str, settings.betas)}}  # fmt: skip
        summary[key].update(summary[key]["sweep"][beta])
        summary[key]["train_seconds"] = mean(concepts[c][method]["train_seconds"] for c in concepts)
        summary[key]["file_bytes"] = mean(concepts[c][method]["file_bytes"] for c in concepts)
    return summary


def sweep_plot(summary: dict):
    from musekit.eval.plot import line_plot

    series = {}
    for key in ("perfusion-local", "perfusion-global", "trained-k"):
        series[key] = [
            (v["text_fidelity"], v["concept_similarity"], f"b={b}") for b, v in summary[key]["sweep"].items()
        ]
    for key in ("textual-inversion", "custom-diffusion", "dreambooth"):
        series[key] = [(summary[key]["text_fidelity"], summary[key]["concept_similarity"], "")]
    return line_plot(series, "Perfusion beta sweep vs baselines", "text fidelity (checker)",
                     "concept similarity")  # fmt: skip


def concept_file_floats(text_dim: int, spaces: list[tuple[int, int]]) -> int:
    """Floats in the concept layout: the embedding, plus per K/V input space i* (d) and o*_V per layer (layers, d)."""
    return text_dim + sum(d + layers * d for d, layers in spaces)


# The same layout on other geometries (K/V input spaces as (width, edited layers)):
# aMUSEd-256: CLIP-L text (768); 22 transformer cross-attentions read the 1024-wide projected text, and the 12
# attention modules of the conv down/up blocks read the 768-wide kv_mapper output. SD 1.5: 16 cross-attentions read
# the 768-wide CLIP text; their outputs are 320/640/1280 wide, 12,480 in all.
GEOMETRIES = {
    "amused-256": concept_file_floats(768, [(1024, 22), (768, 12)]),
    "sd-1.5": 768 + 768 + 12480,
}
