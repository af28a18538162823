"""Pre-encoded token shards: images are tokenized once, transformers train on ids.

A shard folder holds ``shard-00000.safetensors`` ... with ``ids_lo`` (N, h, w) base tokens, ``ids_hi`` (N, H, W)
super-resolution tokens and ``index`` (N,) the shapes-world example index (captions are drawn fresh each step from
the scene, so every template and synonym is seen), plus ``meta.json``. Shards encoded through a base-stage tokenizer
(``lo_through``) also hold ``ids_start`` (N, H, W): the super-resolution tokens of that tokenizer's reconstruction
upsampled to the final size, i.e. what the super-resolution stage starts from at ``sr_strength`` < 1.

While ``encode_shards`` writes a folder it holds ``.encoding`` (its process id and host), so that a second writer (a
``musekit train`` started on a folder that ``musekit encode-shards`` has not finished) refuses instead of writing the
same shards beside it; a marker left by a killed process is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from musekit.data.renders import render_examples, to_float
from musekit.data.shapes import ShapesWorld
from musekit.editing.masks import resize
from musekit.io.checkpoint import atomic_save_tensors, atomic_write_text
from musekit.tokenizer import VQModel

META = "meta.json"
WRITER = ".encoding"


def shards_writer(folder: str | Path) -> dict | None:
    """The live process writing shards into ``folder`` ({"pid", "host"}), or None. A marker from another host counts
    as live (its process cannot be checked from here); one from a process of this host that has ended does not."""
    try:
        writer = json.loads((Path(folder) / WRITER).read_text())
        pid, host = int(writer["pid"]), str(writer["host"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # another user's live process
            pass
    return {"pid": pid, "host": host}


@contextlib.contextmanager
def writing_shards(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s writer marker while the block runs; refuse if another live process holds it."""
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    writer = shards_writer(folder)
    if writer is not None and writer != me:
        raise FileExistsError(
            f"{folder} is being written by process {writer['pid']} on {writer['host']} (musekit encode-shards?): "
            f"wait for it to finish, or delete {folder / WRITER} if no such process runs"
        )
    atomic_write_text(folder / WRITER, json.dumps(me))
    try:
        yield
    finally:
        (folder / WRITER).unlink(missing_ok=True)


@torch.no_grad()
def encode_shards(
    vq: VQModel,
    world: ShapesWorld,
    out_dir: str | Path,
    num_examples: int,
    image_size: int,
    split: str = "train",
    shard_size: int = 5000,
    batch_size: int = 64,
    progress: bool = True,
    lo_through: VQModel | None = None,
    workers: int = 0,
) -> Path:
    """Render and tokenize ``num_examples`` examples at ``image_size`` (hi) and ``image_size // 2`` (lo).

    The tokenizers run where their weights are (CPU or GPU); ``workers`` > 0 renders in that many processes (the
    shards are the same either way).

    ``lo_through``: a base-stage tokenizer whose reconstruction of the low-resolution render is tokenized instead of
    the render itself, so that a super-resolution stage trains on the conditioning it meets at inference (the base
    stage's decoded image re-tokenized, see ``MusePipeline.sr_cond_ids``) rather than on sharper renders. Such shards
    also hold ``ids_start``: the reconstruction upsampled to ``image_size`` and tokenized, as
    ``musekit.editing.img2img.upsampled_start_ids`` does with the base stage's ids."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with writing_shards(out):
        vq.eval()
        if lo_through is not None:
            lo_through.eval()
        device = next(vq.parameters()).device
        bar = tqdm(total=num_examples, desc="encode shards", disable=not progress)
        pool = _render_pool(workers)
        try:
            for shard, start in enumerate(range(0, num_examples, shard_size)):
                count = min(shard_size, num_examples - start)
                lo, hi, start_ids = [], [], []
                jobs = [(world, split, start + offset, min(batch_size, count - offset), image_size)
                        for offset in range(0, count, batch_size)]  # fmt: skip
                for images, small in pool.imap(_render_job, jobs) if pool is not None else map(_render_job, jobs):
                    images, small = images.to(device), small.to(device)
                    hi.append(vq.encode(images).to(torch.int16).cpu())
                    if lo_through is not None:
                        drawn = lo_through.decode(lo_through.encode(small))
                        start_ids.append(vq.encode(resize(drawn, image_size)).to(torch.int16).cpu())
                        small = drawn.clamp(0.0, 1.0)
                    lo.append(vq.encode(small).to(torch.int16).cpu())
                    bar.update(len(images))
                index = torch.arange(start, start + count)
                tensors = {"ids_lo": torch.cat(lo), "ids_hi": torch.cat(hi), "index": index}
                if start_ids:
                    tensors["ids_start"] = torch.cat(start_ids)
                atomic_save_tensors(tensors, out / f"shard-{shard:05d}.safetensors")
        finally:
            if pool is not None:
                pool.terminate()  # every result has been consumed (or an error ends the run)
            bar.close()
        meta = {"num_examples": num_examples, "image_size": image_size, "split": split, "world_seed": world.seed,
                "two_object_fraction": world.two_object_fraction, "jitter": world.jitter,
                "codebook_size": vq.config.codebook_size, "lo_through": lo_through is not None}  # fmt: skip
        atomic_write_text(out / META, json.dumps(meta, indent=2))
        return out


def _render_job(job) -> tuple[torch.Tensor, torch.Tensor]:
    world, split, start, count, image_size = job
    return render_stages(world.examples(split, count, start), image_size)


def _render_pool(workers: int):
    if workers <= 0:
        return None
    import multiprocessing

    return multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,))


def render_stages(examples, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float renders at ``image_size`` (super-resolution stage) and at half that (base stage)."""
    images = to_float(render_examples(examples, image_size))
    return images, F.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def encode_base_ids(
    vq: VQModel,
    world: ShapesWorld,
    indices: torch.Tensor,
    image_size: int,
    allowed_codes: torch.Tensor,
    split: str = "train",
    batch_size: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """(N, h, w) int16 base-stage ids of the examples ``indices``, tokenized with the codebook subset
    ``allowed_codes`` (the same renders as ``encode_shards``'s ``ids_lo``)."""
    vq.eval()
    out = []
    for start in tqdm(range(0, len(indices), batch_size), desc="encode base ids", disable=not progress):
        examples = [world.example(split, int(i)) for i in indices[start : start + batch_size]]
        small = render_stages(examples, image_size)[1].to(next(vq.parameters()).device)
        out.append(vq.encode(small, allowed_codes).to(torch.int16).cpu())
    return torch.cat(out)


class TokenShards:
    """All shards of a folder in memory: ``ids_lo``, ``ids_hi``, example ``index`` and, for shards encoded through a
    base-stage tokenizer, ``ids_start`` (else None)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if not (folder / META).is_file():
            raise FileNotFoundError(f"no token shards in {folder} ({META} missing)")
        self.meta = json.loads((folder / META).read_text())
        parts = [load_file(str(p)) for p in sorted(folder.glob("shard-*.safetensors"))]
        self.ids_lo = torch.cat([p["ids_lo"] for p in parts])
        self.ids_hi = torch.cat([p["ids_hi"] for p in parts])
        self.index = torch.cat([p["index"] for p in parts])
        self.ids_start = torch.cat([p["ids_start"] for p in parts]) if all("ids_start" in p for p in parts) else None
        if len(self.index) != self.meta["num_examples"]:
            raise ValueError(f"{folder}: {len(self.index)} examples in shards, meta says {self.meta['num_examples']}")

    def __len__(self) -> int:
        return len(self.index)


def batch_indices(num_items: int, batch_size: int, step: int, rank: int, world_size: int, seed: int) -> torch.Tensor:
    """Indices of this process's batch at ``step``: a fixed function of (seed, step, rank), so resuming after a kill
    reproduces the same data order. Each epoch is a fresh permutation; processes take disjoint slices."""
    global_batch = batch_size * world_size
    per_epoch = max(1, num_items // global_batch)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = position * global_batch + rank * batch_size
    return order[start : start + batch_size]
