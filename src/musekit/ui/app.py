"""The gradio web UI of `musekit ui`: generate, inpaint, outpaint, edit and personalize in one page.

``build_app(studio)`` lays the page out and wires each button to a ``Studio`` method; bad input shows the method's
one-line message as an error. ``serve`` runs it. Offline: analytics are off, fonts are the system's.
"""

from __future__ import annotations

import functools
import html
import os
import secrets
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (the environment variable must be set first)

from musekit.io.metadata import (  # noqa: E402
    describe,
    machine_record,
    read_record,
    sampling_record,
    weights_fingerprint,
)
from musekit.personalize.rank_one import DEFAULT_BIAS, DEFAULT_TEMPERATURE  # noqa: E402
from musekit.ui.studio import (  # noqa: E402
    KEY_LOCKING,
    MAX_IMAGES,
    VARIANTS,
    ConceptChoice,
    Result,
    Studio,
    mask_from_layers,
)

SHAPES_PROMPTS = [
    "a large red circle in the center on a blue background",
    "a small yellow star at the top left on a gray background",
    "a green triangle left of a white square on a black background",
    "a small purple heart at the bottom right on a checkered background",
]
OPEN_PROMPTS = [  # for a model trained on real images (an aMUSEd checkpoint)
    "a photo of a red fox in the snow",
    "a watercolor painting of a lighthouse at sunset",
    "a cup of coffee on a wooden table, studio lighting",
]
CONCEPT_NOTE = (
    "Concepts picked in **Generate**, under *concepts (Perfusion)*, apply here too: write a concept's token in the "
    "prompt to put it in the picture."
)
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
PROGRESS = gr.Progress(track_tqdm=True)  # each handler's progress bar follows the pipeline's tqdm bars
INTRO = (
    "# musekit\n"
    "Muse-style masked-token text-to-image with Perfusion personalization. {model} Learn a concept in the "
    "**Personalize** tab, then write its token (e.g. `<emblem>`) in a prompt."
)
SHAPES_INTRO = (
    "This model draws the shapes world: shapes, colours, sizes, positions and backgrounds, e.g. *a small green "
    "star at the top left on a gray background*; it reads whole captions best, in editing too."
)


def intro_and_examples(pipe) -> tuple[str, list[str]]:
    folder = getattr(pipe, "source_folder", None)
    if pipe.is_shapes_world:
        where = "" if pipe.is_bundled or folder is None else f"Model: `{folder}`. "
        return INTRO.format(model=where + SHAPES_INTRO), SHAPES_PROMPTS
    model = f"Model: `{folder}`." if folder is not None else "Model: built in memory."
    return INTRO.format(model=model), OPEN_PROMPTS


def shows_errors(method):
    """Turn a Studio method's ValueError / OSError into the UI's one-line error message (escaped: the page shows
    it as HTML, where a token such as <emblem> would vanish)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (ValueError, OSError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise gr.Error(html.escape(message, quote=False)) from None

    return wrapper


def first(result: Result) -> tuple:
    """The editing tabs show one image: (image, summary)."""
    return result.images[0], result.summary


def summary_box() -> gr.Textbox:
    """Where a call's one-line summary goes (plain text: a token such as <emblem> shows as written)."""
    return gr.Textbox(label="summary", interactive=False, lines=1, max_lines=2)


# the Generate tab's sliders (steps 0: the model's default; Studio.generate allows 1-64 steps)
RANGES = {"num": (1, MAX_IMAGES), "steps": (0, 64), "guidance": (0.0, 8.0), "bias": (0.3, 1.2),
          "temperature": (0.02, 0.5)}  # fmt: skip
NOT_IN_TAB = ("sr_steps", "sr_strength", "guidance_schedule", "top_k", "choice_temperature")
GENERATE_FIELDS = ("prompt", "negative", "seed", "num", "steps", "guidance", "learned", "uploaded", "bias",
                   "temperature", "key_locking")  # fmt: skip


def generate_settings(record: dict, studio: Studio) -> tuple[dict, list[str]]:
    """A generated PNG's record -> (the Generate tab's values by ``GENERATE_FIELDS``, notes on what the tab cannot
    carry over). Every field gets a value (concepts none, the gate's defaults) so nothing stale stays; the
    record's concept files are offered under their tokens (``Studio.register``); values outside the sliders are
    clamped, with a note."""
    if record["command"] != "generate":
        raise ValueError(f"this image was made by {record['command']}, not generate: its command line is shown above")
    notes, tokens = [], []
    for path in record.get("concept") or []:
        if not Path(path).is_file():
            notes.append(f"the concept file {path} is not on this machine")
            continue
        token, replaced = studio.register(path)
        if token in tokens:
            notes.append(f"two recorded concept files use the token {token}: only {path} is picked")
        elif replaced is not None:
            notes.append(f"{token} now names {path} (it named {replaced})")
        tokens = [t for t in tokens if t != token] + [token]

    def given(key, default):
        return default if record.get(key) is None else record[key]

    values = {
        "prompt": record["prompt"], "negative": given("negative", ""), "seed": given("seed", 0), "num": given("num", 1),
        "steps": given("steps", 0), "guidance": given("guidance", studio.pipe.config.guidance_scale),
        "learned": tokens, "uploaded": None, "bias": given("bias", DEFAULT_BIAS),
        "temperature": given("temperature", DEFAULT_TEMPERATURE), "key_locking": given("key_locking", "local"),
    }  # fmt: skip
    for key, (low, high) in RANGES.items():
        value = values[key]
        if not low <= value <= high:
            values[key] = min(max(value, low), high)
            notes.append(f"{key} {value} is outside this page's range: {values[key]} instead")
    if values["seed"] > 2**53:
        notes.append(f"seed {values['seed']} is too large for the page's number box: use the command line")
    defaults = sampling_record(studio.pipe)
    for key in NOT_IN_TAB:
        if record.get(key) is not None and record[key] != defaults.get(key):
            default = defaults.get(key)
            notes.append(f"{key} {record[key]} (" + ("this page leaves it unset" if default is None else
                                                    f"this page uses the model's {default}") + ")")  # fmt: skip
    if record.get("model_fingerprint") != weights_fingerprint(studio.pipe):
        notes.append(f"it was made with another model ({record.get('model') or 'the bundled model'})")
    machine = machine_record(studio.pipe)
    for key in ("int8", "half"):
        if (record.get(key) or None) != machine[key]:
            notes.append(f"it was made with --{key} {record.get(key) or 'unset'}, this page runs with "
                         f"{machine[key] or 'no --' + key}")  # fmt: skip
    return values, notes


def build_app(studio: Studio) -> gr.Blocks:
    """The page; ``app.launch()`` serves it."""
    size = studio.pipe.image_size
    intro, examples = intro_and_examples(studio.pipe)

    @shows_errors
    def generate(prompt, negative, seed, count, steps, guidance, learned, uploaded, bias, temperature, locking,
                 progress=PROGRESS):  # fmt: skip
        concepts = list(learned or []) + list(uploaded or [])
        result = studio.generate(prompt, negative, seed, count, steps, guidance, concepts, bias, temperature, locking)
        return result.images, result.summary

    def choice(learned, uploaded, bias, temperature, locking) -> ConceptChoice:
        """The Generate tab's concepts, which the editing tabs use too: those whose token the prompt writes."""
        return ConceptChoice(list(learned or []) + list(uploaded or []), bias, temperature, locking,
                             only_in_prompt=True)  # fmt: skip

    @shows_errors
    def inpaint(editor, prompt, seed, *concepts, progress=PROGRESS):
        background, mask = (editor["background"] if editor else None), mask_from_layers(editor)
        return first(studio.inpaint(background, mask, prompt, seed, concepts=choice(*concepts)))

    @shows_errors
    def outpaint(image, prompt, left, top, right, bottom, seed, mode, *concepts, progress=PROGRESS):
        return first(studio.outpaint(image, prompt, left, top, right, bottom, seed, mode, concepts=choice(*concepts)))

    @shows_errors
    def edit(image, prompt, source, iterations, seed, *concepts, progress=PROGRESS):
        return first(studio.edit(image, prompt, source, iterations, seed, concepts=choice(*concepts)))

    @shows_errors
    def img2img(image, prompt, strength, seed, *concepts, progress=PROGRESS):
        return first(studio.img2img(image, prompt, strength, seed, concepts=choice(*concepts)))

    @shows_errors
    def learn(files, token, superclass, steps, variant, seed, ticked, progress=PROGRESS):
        path, text = studio.learn(files, token, superclass, steps, variant, seed)
        ticks = [t for t in ticked or [] if t in studio.learned] + [token.strip()]
        # the download is a copy in gradio's temp folder: the concept folder itself is never served
        download = Path(tempfile.mkdtemp(prefix="musekit-concept-")) / path.name
        shutil.copyfile(path, download)
        return str(download), text, gr.update(choices=list(studio.learned), value=list(dict.fromkeys(ticks)))

    def read_settings(path):
        """The settings of an uploaded PNG, or why there are none (shown in the same box, so nothing stale stays)."""
        if not path:
            return "", gr.update(interactive=False)
        try:
            record = read_record(path)
        except (ValueError, OSError) as err:
            return str(err).splitlines()[0], gr.update(interactive=False)
        return describe(record), gr.update(interactive=record["command"] == "generate")

    @shows_errors
    def settings_to_generate(path):
        record = read_record(path)
        values, notes = generate_settings(record, studio)
        updates = {key: gr.update(value=value) for key, value in values.items()}
        updates["learned"] = gr.update(choices=list(studio.learned), value=values["learned"])
        text = describe(record) + ("\n\nNot carried over: " + "; ".join(notes) + "." if notes else
                                   "\n\nEvery setting is in the Generate tab now.")  # fmt: skip
        if record.get("index") is not None:
            text += f" Generate makes all {record['num']} images: this one is number {record['index'] + 1}."
        return (*(updates[key] for key in GENERATE_FIELDS), text, gr.Tabs(selected="generate"))

    def first_image(images):
        """Gallery value [(path, caption), ...] -> the first image into the editing tabs' inputs."""
        if not images:
            raise gr.Error("generate an image first")
        image = images[0][0] if isinstance(images[0], tuple | list) else images[0]
        return {"background": image, "layers": [], "composite": image}, image, image

    theme = gr.themes.Soft(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="musekit", theme=theme, analytics_enabled=False) as app:
        gr.Markdown(intro)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        prompt = gr.Textbox(label="prompt", value=examples[0], lines=2)
                        negative = gr.Textbox(label="negative prompt (what to steer away from)", placeholder="optional")
                        with gr.Row():
                            with gr.Column(min_width=160):
                                seed = gr.Number(label="seed", value=0, precision=0)
                                dice = gr.Button("random seed", size="sm")
                            count = gr.Slider(*RANGES["num"], value=4, step=1, label="images")
                        with gr.Accordion("sampling", open=False):
                            steps = gr.Slider(*RANGES["steps"], value=0, step=1,
                                              label="base steps (0: the model's default)")  # fmt: skip
                            guidance = gr.Slider(*RANGES["guidance"], value=studio.pipe.config.guidance_scale,
                                                 step=0.05, label="classifier-free guidance")  # fmt: skip
                        with gr.Accordion("concepts (Perfusion)", open=False):
                            learned = gr.Dropdown(
                                list(studio.learned), value=[], multiselect=True, allow_custom_value=True,
                                label="learned in this session (their tokens)",
                            )  # fmt: skip
                            uploaded = gr.File(
                                label="concept files", file_count="multiple", file_types=[".safetensors"],
                                type="filepath",
                            )  # fmt: skip
                            bias_label = "bias (lower: more like the concept; higher: more like the text)"
                            bias = gr.Slider(*RANGES["bias"], value=DEFAULT_BIAS, step=0.05, label=bias_label)
                            temperature = gr.Slider(*RANGES["temperature"], value=DEFAULT_TEMPERATURE, step=0.01,
                                                    label="temperature")  # fmt: skip
                            locking = gr.Radio(list(KEY_LOCKING), value="local", label="key-locking")
                        run = gr.Button("Generate", variant="primary")
                        gr.Examples(examples, inputs=[prompt])
                    with gr.Column(scale=3):
                        gallery = gr.Gallery(label="images", columns=4, height="auto", format="png", interactive=False)
                        summary = summary_box()
                        send = gr.Button("Edit the first image in the other tabs")
                concept_inputs = [learned, uploaded, bias, temperature, locking]  # the editing tabs use them too
                inputs = [prompt, negative, seed, count, steps, guidance, *concept_inputs]
                run.click(generate, inputs, [gallery, summary], api_name="generate")
                prompt.submit(generate, inputs, [gallery, summary], api_name=False)
            with gr.Tab("Inpaint"):
                gr.Markdown(CONCEPT_NOTE)
                with gr.Row():
                    with gr.Column():
                        editor = gr.ImageEditor(label=f"image: paint over what to repaint ({size} px)", type="pil",
                                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=16),
                                                eraser=gr.Eraser(default_size=16), transforms=())  # fmt: skip
                        inpaint_prompt = gr.Textbox(label="the prompt for the result (the whole scene)",
                                                    placeholder=f"e.g. {examples[0]}")  # fmt: skip
                        inpaint_seed = gr.Number(label="seed", value=0, precision=0)
                        inpaint_run = gr.Button("Inpaint", variant="primary")
                    with gr.Column():
                        inpaint_out = gr.Image(label="result", type="pil", format="png")
                        inpaint_summary = summary_box()
                inpaint_run.click(inpaint, [editor, inpaint_prompt, inpaint_seed, *concept_inputs],
                                  [inpaint_out, inpaint_summary])  # fmt: skip
            with gr.Tab("Outpaint"):
                gr.Markdown(CONCEPT_NOTE)
                with gr.Row():
                    with gr.Column():
                        outpaint_in = gr.Image(label="image", type="pil", image_mode="RGBA")
                        outpaint_prompt = gr.Textbox(
                            label="what the new area should show (or the picture's caption)",
                            placeholder=f"e.g. {examples[0]}",
                        )
                        with gr.Row():
                            sides = (("left", 0), ("top", 0), ("right", size // 2), ("bottom", 0))
                            pads = [gr.Number(label=side, value=value, precision=0, minimum=0) for side, value in sides]
                        with gr.Row():
                            outpaint_seed = gr.Number(label="seed", value=0, precision=0)
                            outpaint_mode = gr.Radio(
                                ["window", "fit"], value="window", label="mode",
                                info="window: the image's own scale, in model-size windows (sharp; a named object may "
                                "repeat); fit: the whole picture in one pass, scaled to the model",
                            )  # fmt: skip
                        outpaint_run = gr.Button("Outpaint", variant="primary")
                    with gr.Column():
                        outpaint_out = gr.Image(label="result", type="pil", format="png")
                        outpaint_summary = summary_box()
                outpaint_run.click(outpaint, [outpaint_in, outpaint_prompt, *pads, outpaint_seed, outpaint_mode,
                                              *concept_inputs], [outpaint_out, outpaint_summary])  # fmt: skip
            with gr.Tab("Edit"):
                gr.Markdown(CONCEPT_NOTE)
                with gr.Row():
                    with gr.Column():
                        edit_in = gr.Image(label="image", type="pil", image_mode="RGBA")
                        edit_prompt = gr.Textbox(label="what the result should show", value=examples[0])
                        edit_source = gr.Textbox(label="what the image shows now (optional: confines the edit)")
                        with gr.Row():
                            iterations = gr.Slider(10, 200, value=100, step=10, label="iterations")
                            edit_seed = gr.Number(label="seed", value=0, precision=0)
                        edit_run = gr.Button("Edit", variant="primary")
                        with gr.Accordion("or image to image: re-generate a share of the tokens", open=False):
                            strength = gr.Slider(0.0, 1.0, value=0.5, step=0.05,
                                                 label="strength (0 keeps the image, 1 regenerates it)")  # fmt: skip
                            img2img_run = gr.Button("Image to image")
                    with gr.Column():
                        edit_out = gr.Image(label="result", type="pil", format="png")
                        edit_summary = summary_box()
                edit_run.click(edit, [edit_in, edit_prompt, edit_source, iterations, edit_seed, *concept_inputs],
                               [edit_out, edit_summary])  # fmt: skip
                img2img_run.click(img2img, [edit_in, edit_prompt, strength, edit_seed, *concept_inputs],
                                  [edit_out, edit_summary])  # fmt: skip
            with gr.Tab("Personalize"):
                with gr.Row():
                    with gr.Column():
                        files = gr.File(label="4-6 images of the concept", file_count="multiple", file_types=["image"],
                                        type="filepath")  # fmt: skip
                        with gr.Row():
                            token = gr.Textbox(label="token", value="<emblem>")
                            superclass = gr.Textbox(label="superclass (what it is)", value="red circle")
                        with gr.Row():
                            concept_steps = gr.Slider(0, 300, value=0, step=10, label="steps (0: the default)")
                            variant = gr.Radio(list(VARIANTS), value="local", label="variant")
                            concept_seed = gr.Number(label="seed", value=0, precision=0)
                        learn_run = gr.Button("Learn the concept", variant="primary")
                    with gr.Column():
                        concept_file = gr.File(label="concept file")
                        learn_summary = summary_box()
                learn_run.click(learn, [files, token, superclass, concept_steps, variant, concept_seed, learned],
                                [concept_file, learn_summary, learned])  # fmt: skip
            with gr.Tab("Image settings"):
                with gr.Row():
                    with gr.Column():
                        info_in = gr.Image(
                            label="a PNG that musekit wrote (here or on the command line)", type="filepath",
                            image_mode=None, sources=["upload", "clipboard"],
                        )  # fmt: skip
                    with gr.Column():
                        info_text = gr.Textbox(label="how it was made, and the command that makes it again",
                                               lines=6, interactive=False)  # fmt: skip
                        to_generate = gr.Button("Use these settings in Generate", interactive=False)
                info_in.change(read_settings, [info_in], [info_text, to_generate], api_name=False)
                fields = [prompt, negative, seed, count, steps, guidance, learned, uploaded, bias, temperature, locking]
                to_generate.click(settings_to_generate, [info_in], [*fields, info_text, tabs], api_name=False)
        dice.click(lambda: secrets.randbelow(2**32), None, seed, api_name=False, queue=False)
        send.click(first_image, [gallery], [editor, outpaint_in, edit_in], api_name=False, queue=False)
        # a reloaded page (or a second browser) lists every concept learned since the server started
        app.load(lambda: gr.update(choices=list(studio.learned)), None, learned, api_name=False, queue=False)
    return app


def serve(studio: Studio, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True) -> gr.Blocks:
    """Build and launch the page (``port`` None: the first free one from 7860)."""
    studio.concept_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(studio)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=False, quiet=True, prevent_thread_lock=True)
    if block:
        print(f"musekit: serving the UI at {app.local_url} (Ctrl+C stops it)", flush=True)
        app.block_thread()
    return app
