"""`musekit eval edit`: inpainting, outpainting and mask-free editing on shapes-world scenes, read by the checker.

* inpaint: mask the object's cell of a one-object scene and ask for another object (colour and shape) there;
  success = the checker reads the new colour and shape; also checks that pixels outside the mask are identical.
* outpaint: extend the scene by a quarter on the right; success = the checker reads the background in the new strip.
* edit: change the object's colour or shape with the prompt alone (random re-masking, and the attention-region
  variant given the source prompt); success = the changed attribute is read right; preserved = position and
  background are still read right.
* img2img: redraw the scene at ``img2img_strength`` under a prompt that changes its object's colour, its shape or
  the background (in turn); follows = the changed attribute is read as the prompt's; kept = the position and the
  two other attributes are read as the source's; clean = one object is read, and its colour, its shape and the
  background each as the source's or the prompt's value (not a patchwork of the two scenes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from musekit.data.concepts import cell_box
from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, Example, Scene, ShapesWorld
from musekit.eval.checker import ShapeChecker

COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class EditEvalSettings:
    num_cases: int = 50
    iterations: int = 30
    seed: int = 0
    guidance_scale: float | None = None  # None: each method's default (the model's configured scale)
    img2img_strength: float = 0.5


def one_object_scenes(count: int, seed: int) -> list[Scene]:
    world = ShapesWorld(seed)
    scenes, index = [], 0
    while len(scenes) < count:
        ex = world.example("val", index)
        index += 1
        if ex.scene.relation is None and ex.scene.background not in ("striped", "checkered"):
            scenes.append(ex.scene)
    return scenes


def changed(scene: Scene, k: int, attribute: str) -> Scene:
    """The scene with its object's colour or shape, or its background, changed (deterministically by k), keeping the
    object visible."""
    obj = scene.objects[0]
    if attribute == "shape":
        options = [s for s in SHAPES if s != obj.shape]
        return replace(scene, objects=(replace(obj, shape=options[k % len(options)]),))
    options = [c for c in COLOR_NAMES if c not in (obj.color, scene.background)]
    if attribute == "background":
        return replace(scene, background=options[k % len(options)])
    return replace(scene, objects=(replace(obj, color=options[k % len(options)]),))


IMG2IMG_CHANGES = ("color", "shape", "background")


def read(checker: ShapeChecker, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return checker.predict(images)


def read_values(pred: dict[str, torch.Tensor], i: int = 0) -> dict:
    """The checker's reading of image ``i`` as attribute names (and the object count)."""
    return {"color": COLOR_NAMES[pred["color"][i]], "shape": SHAPES[pred["shape"][i]],
            "background": BACKGROUNDS[pred["background"][i]], "position": POSITIONS[pred["position"][i]],
            "count": int(pred["count"][i]) + 1}  # fmt: skip


def scene_values(scene: Scene) -> dict[str, str]:
    obj = scene.objects[0]
    return {"color": obj.color, "shape": obj.shape, "background": scene.background, "position": obj.position}


def img2img_verdict(got: dict, source: Scene, target: Scene, kind: str) -> dict[str, bool]:
    """follows / kept / clean of one image-to-image result read as ``got`` (see the module doc)."""
    src, tgt = scene_values(source), scene_values(target)
    return {
        "follows": got[kind] == tgt[kind],
        "kept": all(got[a] == src[a] for a in ("position", *IMG2IMG_CHANGES) if a != kind),
        "clean": got["count"] == 1 and all(got[a] in (src[a], tgt[a]) for a in IMG2IMG_CHANGES),
    }


def evaluate_inpaint(pipe, checker, scenes, settings) -> dict:
    right, colors, shapes, identical, seconds = 0, 0, 0, 0, 0.0
    size = pipe.image_size
    for k, scene in enumerate(scenes):
        image = to_float(render_examples([_example(scene)], size))
        x0, y0, x1, y1 = cell_box(scene.objects[0].position, size)
        mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
        mask[..., y0:y1, x0:x1] = True
        target = changed(changed(scene, k, "color"), k, "shape")
        start = time.perf_counter()
        out = pipe.inpaint(image, mask, target.canonical_caption(), generator=torch.Generator().manual_seed(k),
                           output_type="pt", guidance_scale=settings.guidance_scale).images  # fmt: skip
        seconds += time.perf_counter() - start
        got = read_values(read(checker, out))
        obj = target.objects[0]
        color_ok, shape_ok = got["color"] == obj.color, got["shape"] == obj.shape
        right, colors, shapes = right + int(color_ok and shape_ok), colors + int(color_ok), shapes + int(shape_ok)
        keep = ~mask.expand(1, 3, -1, -1)
        identical += int(torch.equal(out[keep], image[keep]))
    n = len(scenes)
    return {"new_object_read": right / n, "color_read": colors / n, "shape_read": shapes / n,
            "outside_identical": identical / n, "seconds_per_image": seconds / n}  # fmt: skip


def evaluate_outpaint(pipe, checker, scenes, settings) -> dict:
    right, seconds = 0, 0.0
    size = pipe.image_size
    pad = size // 4
    for k, scene in enumerate(scenes):
        image = to_float(render_examples([_example(scene)], size))
        start = time.perf_counter()
        out = pipe.outpaint(image, scene.canonical_caption(), pad=(0, 0, pad, 0),
                            guidance_scale=settings.guidance_scale, generator=torch.Generator().manual_seed(k),
                            output_type="pt").images  # fmt: skip
        seconds += time.perf_counter() - start
        strip = F.interpolate(out[..., :, size:], size=(size, size), mode="bilinear", antialias=True)
        right += int(read_values(read(checker, strip))["background"] == scene.background)
    return {"background_read_in_new_area": right / len(scenes), "seconds_per_image": seconds / len(scenes)}


def evaluate_maskfree(pipe, checker, scenes, settings, region: bool) -> dict:
    changed_right, preserved, seconds = 0, 0, 0.0
    by_attribute = {"color": [], "shape": []}
    size = pipe.image_size
    for k, scene in enumerate(scenes):
        attribute = "color" if k % 2 == 0 else "shape"
        target = changed(scene, k, attribute)
        image = to_float(render_examples([_example(scene)], size))
        start = time.perf_counter()
        out = pipe.edit(image, target.canonical_caption(), iterations=settings.iterations,
                        source_prompt=scene.canonical_caption() if region else None,
                        guidance_scale=settings.guidance_scale, generator=torch.Generator().manual_seed(k),
                        output_type="pt").images  # fmt: skip
        seconds += time.perf_counter() - start
        got = read_values(read(checker, out))
        obj = target.objects[0]
        changed_right += int(got[attribute] == getattr(obj, attribute))
        by_attribute[attribute].append(got[attribute] == getattr(obj, attribute))
        preserved += int(got["position"] == obj.position and got["background"] == scene.background)
    n = len(scenes)
    return {"changed_attribute_read": changed_right / n, "unchanged_attributes_kept": preserved / n,
            "color_changes_read": sum(by_attribute["color"]) / max(1, len(by_attribute["color"])),
            "shape_changes_read": sum(by_attribute["shape"]) / max(1, len(by_attribute["shape"])),
            "iterations": settings.iterations, "seconds_per_edit": seconds / n}  # fmt: skip


def evaluate_img2img(pipe, checker, scenes, settings) -> dict:
    totals, seconds = {"follows": 0, "kept": 0, "clean": 0}, 0.0
    size = pipe.image_size
    for k, scene in enumerate(scenes):
        kind = IMG2IMG_CHANGES[k % len(IMG2IMG_CHANGES)]
        target = changed(scene, k, kind)
        image = to_float(render_examples([_example(scene)], size))
        start = time.perf_counter()
        out = pipe.img2img(image, target.canonical_caption(), strength=settings.img2img_strength,
                           guidance_scale=settings.guidance_scale, generator=torch.Generator().manual_seed(k),
                           output_type="pt").images  # fmt: skip
        seconds += time.perf_counter() - start
        verdict = img2img_verdict(read_values(read(checker, out)), scene, target, kind)
        totals = {key: totals[key] + int(verdict[key]) for key in totals}
    n = len(scenes)
    return {"prompt_followed": totals["follows"] / n, "rest_kept": totals["kept"] / n,
            "one_clean_scene": totals["clean"] / n, "strength": settings.img2img_strength,
            "seconds_per_image": seconds / n}  # fmt: skip


def _example(scene: Scene) -> Example:
    return Example(scene, scene.canonical_caption())


def evaluate_editing(pipe, checker: ShapeChecker, settings: EditEvalSettings | None = None) -> dict:
    settings = settings or EditEvalSettings()
    pipe.progress_bar = False
    scenes = one_object_scenes(settings.num_cases, settings.seed)
    return {
        "settings": settings.__dict__,
        "inpaint": evaluate_inpaint(pipe, checker, scenes, settings),
        "outpaint": evaluate_outpaint(pipe, checker, scenes, settings),
        "edit_random": evaluate_maskfree(pipe, checker, scenes, settings, region=False),
        "edit_region": evaluate_maskfree(pipe, checker, scenes, settings, region=True),
        "img2img": evaluate_img2img(pipe, checker, scenes, settings),
    }
