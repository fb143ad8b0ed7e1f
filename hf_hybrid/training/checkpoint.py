"""Checkpoints that resume exactly and load nothing but safetensors and JSON.

accelerate's `save_state` pickles the optimizer, the scheduler and the random states, and its `load_state`
unpickles them (`weights_only=False`): a tampered run folder would run code on `--resume`. A checkpoint here is

    step-N/trainable.safetensors     the trainable parameters (frozen ones never change)
    step-N/optimizer.safetensors     the optimizer's per-parameter tensors; its hyperparameters in state.json
    step-N/rng-rank<R>.safetensors   each process's torch (and CUDA) generator states and numpy's key
    step-N/state.json                step, optimizer groups, scheduler, grad scaler, python/numpy RNG, and the
                                     sha256 of every file above: written last, so a checkpoint without it (or
                                     with a file that does not match) was cut off while saving and is skipped

and it is written under a temporary name, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hf_hybrid.errors import ConfigError

logger = logging.getLogger(__name__)
STATE_FILE = "state.json"


def checkpoints(output_dir: Path) -> list[Path]:
    """Every step-N folder, oldest first (complete or not)."""
    found = [p for p in (output_dir / "checkpoints").glob("step-*") if p.name.split("-")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def trainable_weights(model) -> dict[str, torch.Tensor]:
    """The trained parameters' values by name, read through the state dict: its hooks bring the rows of a deferred
    weight decay up to date first (sparse_adamw.py)."""
    state = model.state_dict(keep_vars=True)
    return {name: state[name].detach().cpu().contiguous() for name in _trainable(model)}


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state dict as safetensors-ready tensors and a JSON-ready rest."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous()
               for index, entry in state["state"].items() for key, value in entry.items()
               if isinstance(value, torch.Tensor)}
    scalars = {str(index): {k: v for k, v in entry.items() if not isinstance(v, torch.Tensor)}
               for index, entry in state["state"].items()}
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
                     "python": [version, list(internal), gauss_next]}


def _set_rng_state(tensors: dict[str, torch.Tensor], rest: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = rest["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rest["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(accelerator, model, optimizer, scheduler, output_dir: Path, step: int, keep: int) -> Path:
    """The full training state at `step`; only the newest `keep` complete checkpoints stay (all, if 0)."""
    final = output_dir / "checkpoints" / f"step-{step}"
    partial = final.with_name(final.name + ".partial")
    rank = accelerator.process_index
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng_tensors, rng_rest = _rng_state()
    save_file(rng_tensors, str(partial / f"rng-rank{rank}.safetensors"))
    (partial / f"rng-rank{rank}.json").write_text(json.dumps(rng_rest))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_main(accelerator, model, optimizer, scheduler, partial, step)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        complete = [p for p in checkpoints(output_dir) if (p / STATE_FILE).is_file()]
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _save_main(accelerator, model, optimizer, scheduler, folder: Path, step: int) -> None:
    save_file(trainable_weights(accelerator.unwrap_model(model)), str(folder / "trainable.safetensors"))
    tensors, optimizer_rest = _optimizer_tensors(optimizer)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    scaler = getattr(accelerator, "scaler", None)
    files = sorted(p.name for p in folder.iterdir())
    state = {"step": step, "optimizer": optimizer_rest, "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "processes": accelerator.num_processes, "sha256": {name: _sha256(folder / name) for name in files}}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))


def _verified(folder: Path, processes: int) -> dict | None:
    """The checkpoint's state if it is complete and every file matches its recorded sha256, else None."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        recorded = state["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    needed = {"trainable.safetensors", "optimizer.safetensors",
              *(f"rng-rank{r}{ext}" for r in range(processes) for ext in (".safetensors", ".json"))}
    if not needed <= set(recorded) or state.get("processes") != processes:
        return None
    if any(not (folder / name).is_file() or _sha256(folder / name) != digest for name, digest in recorded.items()):
        return None
    return state


def latest_checkpoint(output_dir: Path, processes: int) -> tuple[Path, dict]:
    """The newest complete, unaltered checkpoint; a damaged newer one is skipped with a warning."""
    for folder in reversed(checkpoints(output_dir)):
        state = _verified(folder, processes)
        if state is not None:
            return folder, state
        logger.warning("skipping %s: incomplete, altered, or saved by another number of processes", folder)
    raise ConfigError(f"--resume: no complete checkpoint in {output_dir / 'checkpoints'} "
                      "(train without --resume to start from step 0)")


def resume(accelerator, model, optimizer, scheduler, output_dir: Path):
    """Load the newest complete checkpoint into the prepared model, optimizer and scheduler. Returns its step
    and a function that sets this process's random states as they were: the caller calls it when its data
    pipeline is where it was at that step (see `hybrid.epochs`)."""
    folder, state = latest_checkpoint(output_dir, accelerator.num_processes)
    unwrapped = accelerator.unwrap_model(model)
    weights = load_file(str(folder / "trainable.safetensors"))
    unexpected = set(weights) - set(_trainable(unwrapped))
    if unexpected:
        raise ConfigError(f"--resume: {folder} holds weights this run does not train ({sorted(unexpected)[0]}, ...): "
                          "resume with the options it was trained with")
    unwrapped.load_state_dict(weights, strict=False)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    rest = state["optimizer"]
    entries: dict[int, dict] = {int(i): dict(scalars) for i, scalars in rest["scalars"].items()}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": entries, "param_groups": rest["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and getattr(accelerator, "scaler", None) is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    rank = accelerator.process_index
    rng = (load_file(str(folder / f"rng-rank{rank}.safetensors")),
           json.loads((folder / f"rng-rank{rank}.json").read_text()))
    accelerator.print(f"resumed from {folder} at step {state['step']}")
    return state["step"], lambda: _set_rng_state(*rng)
