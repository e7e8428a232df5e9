"""Checkpoints: read them, check that a config describes their network, rebuild the network without Lightning."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from segflow.config.bmz import is_package, read_package, segflow_part
from segflow.config.model_keys import network_keys
from segflow.config.schema import Config
from segflow.errors import SegflowError
from segflow.models.networks import build_model


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a segflow checkpoint, or a BioImage Model Zoo package that segflow exported (as the checkpoint it holds),
    with a clear error for anything else."""
    path = Path(path)
    if path.is_dir() and is_package(path):
        return _from_package(path)
    if not path.is_file():
        raise SegflowError(f"checkpoint {path} not found; train first (TRAIN.ENABLE: true) or give PATHS.CHECKPOINT_FILE")
    if is_package(path):
        return _from_package(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise SegflowError(f"checkpoint {path} cannot be read ({type(exc).__name__}); the file is truncated, corrupt or not a checkpoint") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise SegflowError(f"checkpoint {path} is not a segflow checkpoint (no model config inside); give a file segflow wrote")
    return ckpt


def _from_package(path: Path) -> dict:
    """The checkpoint in a BioImage Model Zoo package (spec 0.5, zip or folder) that ``segflow export --format
    bioimageio`` wrote: its pytorch_state_dict weights (the keys of a checkpoint's) and the config and normalisation it
    stores in ``config.segflow``."""
    rdf, read = read_package(path)
    ours = segflow_part(path, rdf)
    weights = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
    data = read(str(weights.get("source", "")))
    if data is None:
        raise SegflowError(f"{path}: the package has no pytorch_state_dict weights, which segflow reads; export it again with segflow")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {"state_dict": state, "hyper_parameters": {"config": ours["config"], "normalizer": ours["normalizer"]}}


# What a checkpoint's network is built from: a config must agree on these to use its weights.
MODEL_KEYS = network_keys()


def _get(cfg: Config, key: str) -> object:
    value: object = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_model_matches(path: str | os.PathLike, ckpt: dict, cfg: Config, new_head: bool = False) -> None:
    """Raise when ``cfg`` describes another network than the one checkpoint ``path`` holds; with ``new_head``
    (fine-tuning) another MODEL.N_CLASSES is allowed: ``load_weights`` then makes the output layer anew."""
    saved = Config.model_validate(ckpt["hyper_parameters"]["config"])
    keys = [k for k in MODEL_KEYS if not (new_head and k == "MODEL.N_CLASSES")]
    diffs = [(k, _get(saved, k), _get(cfg, k)) for k in keys if _get(saved, k) != _get(cfg, k)]
    if saved.in_channels != cfg.in_channels:
        diffs.append(("DATA.PATCH_SIZE channels", saved.in_channels, cfg.in_channels))
    if diffs:
        shown = "; ".join(f"{k}={a} in the checkpoint, {b} in the config" for k, a, b in diffs)
        raise SegflowError(
            f"checkpoint {path}: its weights do not fit MODEL.* of this config ({shown}); "
            "set them as when the checkpoint was trained, or train a new model"
        )


def optimizer_state(ckpt: dict, path: str | os.PathLike, cfg: Config) -> dict[str, dict]:
    """MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS false: the checkpoint's optimizer state per parameter, by the parameter's name
    in its network (a parameter's place in the optimizer is its place in the network's parameters)."""
    states = ckpt.get("optimizer_states")
    if not states:
        raise SegflowError(f"checkpoint {path} holds no optimizer state (a package, or weights alone); set MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS: true")
    saved = Config.model_validate(ckpt["hyper_parameters"]["config"])
    if saved.TRAIN.OPTIMIZER != cfg.TRAIN.OPTIMIZER:
        raise SegflowError(f"MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS false: checkpoint {path} holds the state of a {saved.TRAIN.OPTIMIZER} "
                           f"optimizer, not of TRAIN.OPTIMIZER {cfg.TRAIN.OPTIMIZER}; set TRAIN.OPTIMIZER {saved.TRAIN.OPTIMIZER}, "
                           "or MODEL.LOAD_CHECKPOINT_ONLY_WEIGHTS: true")  # fmt: skip
    names = [name for name, _ in build_model(saved).named_parameters()]
    state, order = states[0]["state"], states[0]["param_groups"][0]["params"]
    return {names[i]: state[index] for i, index in enumerate(order) if index in state}


def previous(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``<name>.prev.pth``."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


# The LightningModule keeps the network as ``.net``; its other parts (loss, metrics) save no state.
NET_PREFIX = "net."


def load_weights(net: torch.nn.Module, ckpt: dict, path: str | os.PathLike, what: str, skip: str = "") -> list[str]:
    """Load a checkpoint's network weights into ``net``, or say that they do not fit ``what``. ``skip`` '': strictly;
    'shape': tensors of another shape (the output layer of another class count) keep ``net``'s fresh values;
    'unmatched' (MODEL.SKIP_UNMATCHED_LAYERS, the Crick's transfer_weights): so does every tensor whose name and shape
    the checkpoint lacks (a wider or deeper network), the checkpoint's other tensors left out. Returns the names of
    the fresh tensors."""
    state = ckpt["state_dict"]
    weights = {k.removeprefix(NET_PREFIX): v for k, v in state.items() if k.startswith(NET_PREFIX)}
    fresh: list[str] = []
    try:
        if len(weights) != len(state):
            raise RuntimeError(f"unexpected keys {sorted(set(state) - {NET_PREFIX + k for k in weights})[:3]}")
        if skip:
            weights, fresh = _fitting(net, weights, skip == "unmatched")
            if skip == "unmatched" and not {k for k, _ in net.named_parameters()} - set(fresh):
                raise SegflowError(f"checkpoint {path}: none of its layers has the name and shape of one of {what}; train a new model")
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise SegflowError(f"checkpoint {path}: its weights do not fit {what} ({str(exc).splitlines()[0]})") from None
    return fresh


def first_names(net: torch.nn.Module) -> dict[int, str]:
    """Each distinct non-empty tensor of ``net``, by storage address, under its first name: MONAI's DynUNet keeps each
    layer under two names (its levels and its skip path)."""
    return {t.data_ptr(): k for k, t in [*net.named_parameters(), *net.named_buffers()] if t.numel()}


def _fitting(net: torch.nn.Module, weights: dict, unmatched: bool) -> tuple[dict, list[str]]:
    """``(the state dict to load, the first names of the tensors that keep net's values)``: those of another shape
    than the checkpoint's, and with ``unmatched`` those the checkpoint lacks too (without it, a missing tensor stays
    missing: an error). A tensor of several names (``first_names``) is judged by its first, and all get one value."""
    own, first = net.state_dict(), first_names(net)
    name = {k: first.get(t.data_ptr(), k) if t.numel() else k for k, t in own.items()}
    keep = {n for n in set(name.values()) if (n in weights or unmatched) and (n not in weights or weights[n].shape != own[n].shape)}
    loaded = {k: own[k] if name[k] in keep else weights[name[k]] for k in own if name[k] in keep or name[k] in weights}
    return loaded, sorted(keep)


def load_network(path: str | os.PathLike) -> tuple[torch.nn.Module, Config, dict]:
    """Rebuild a checkpoint's trained network without Lightning: ``(network in eval mode on the CPU, its
    config, the checkpoint's hyper-parameters)``; the config alone says how to build it."""
    ckpt = load_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    cfg = Config.model_validate(hp["config"])
    net = build_model(cfg)
    load_weights(net, ckpt, path, "the model its config describes")
    return net.eval(), cfg, hp
