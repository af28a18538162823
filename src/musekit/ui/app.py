"""The gradio web UI of `musekit ui`: generate, inpaint, outpaint, edit and personalize in one page.

``build_app(studio)`` lays the page out and wires each button to a ``Studio`` method; bad input shows the method's
one-line message as an error. ``serve`` runs it. Offline: analytics are off, fonts are the system's.
"""

from __future__ import annotations

import functools
import html
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (the environment variable must be set first)

from musekit.io.metadata import describe, read_record  # noqa: E402
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
    "a purple heart at the bottom right on a checkered background",
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
    "The bundled model draws the shapes world: shapes, colours, sizes, positions and backgrounds, e.g. *a small green "
    "star at the top left on a gray background*; it reads whole captions best, in editing too."
)


def intro_and_examples(pipe) -> tuple[str, list[str]]:
    if pipe.is_bundled:
        return INTRO.format(model=SHAPES_INTRO), SHAPES_PROMPTS
    folder = getattr(pipe, "source_folder", None)
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


def generate_settings(record: dict) -> tuple:
    """A generated PNG's record -> the Generate tab's (prompt, negative, seed, images, steps, guidance, concept
    files, bias, temperature, key-locking); None leaves a field as it is. Recorded concept files that are not
    there are left out."""
    if record["command"] != "generate":
        raise ValueError(f"this image was made by {record['command']}, not generate: its command line is shown above")
    files = [f for f in record.get("concept") or [] if Path(f).is_file()]
    return (record["prompt"], record.get("negative") or "", record.get("seed", 0), record.get("num", 1),
            record.get("steps"), record.get("guidance"), files or None, record.get("bias"),
            record.get("temperature"), record.get("key_locking"))  # fmt: skip


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
        """The Generate tab's concepts, which the editing tabs use too."""
        return ConceptChoice(list(learned or []) + list(uploaded or []), bias, temperature, locking)

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

    @shows_errors
    def read_settings(path):
        if not path:
            return "", gr.update(interactive=False)
        return describe(read_record(path)), gr.update(interactive=True)

    @shows_errors
    def settings_to_generate(path):
        updates = [gr.update(value=v) if v is not None else gr.update() for v in generate_settings(read_record(path))]
        return (*updates, gr.Tabs(selected="generate"))

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
                            seed = gr.Number(label="seed", value=0, precision=0)
                            count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images")
                        with gr.Accordion("sampling", open=False):
                            steps = gr.Slider(0, 64, value=0, step=1, label="base steps (0: the model's default)")
                            guidance = gr.Slider(0.0, 8.0, value=studio.pipe.config.guidance_scale, step=0.5,
                                                 label="classifier-free guidance")  # fmt: skip
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
                            bias = gr.Slider(0.3, 1.2, value=DEFAULT_BIAS, step=0.05, label=bias_label)
                            temperature = gr.Slider(
                                0.02, 0.5, value=DEFAULT_TEMPERATURE, step=0.01, label="temperature"
                            )
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
                generate_fields = [prompt, negative, seed, count, steps, guidance, uploaded, bias, temperature, locking]
                to_generate.click(settings_to_generate, [info_in], [*generate_fields, tabs], api_name=False)
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
