"""The two-network commands of ``lmccheck``: ``align`` and ``barrier``.

They load two checkpoints (safetensors files, or ``.pt`` state dicts read with ``torch.load(...,
weights_only=True)``: a pickle that needs unsafe loading is refused), check that they fit the architecture,
and measure the loss and error barriers (Sharma et al. Eq. 1) of A -> B and, for ``align``, of A -> P[B]. This
module loads torch; :mod:`lmccheck.cli` imports it only when a command needs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .argtypes import positive_int
from .cli_common import PROG, CliError
from .data import DATASETS, Dataset, load_dataset
from .barrier_curves import BarrierResult
from .barrier_options import DEFAULT_ALPHAS, DEFAULT_N_EXAMPLES, BarrierOptions
from .interpolation import barrier
from .models import MODELS, get_model
from .permutation import Permutation, permutation_spec

__all__ = ["add_pair_commands", "check_fit", "load_checkpoint"]

SPLITS = ("train", "test")
METHODS = ("weight", "activation")
DEVICES = ("auto", "cpu", "cuda")
#: Keys under which training scripts commonly nest the state dict of a checkpoint.
WRAPPER_KEYS = ("state_dict", "model_state_dict")
_SAFETENSORS_SUFFIXES = (".safetensors", ".st")


# --------------------------------------------------------------------------- #
# Argument types
# --------------------------------------------------------------------------- #
def _alpha_count(text: str) -> int:
    n = positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 alphas (both endpoints), got {text!r}")
    return n


def _width(text: str) -> int | float:
    """An integer width (MLP units) or a float multiplier (VGG / ResNet)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        w = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(w) or w <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return w


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def _is_safetensors(path: Path) -> bool:
    """Sniff the safetensors layout: 8-byte little-endian header length, then ``{``."""
    if path.suffix.lower() in _SAFETENSORS_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
#: Messages of torch's weights-only unpickler that mean "this pickle builds objects it will not build".
_UNSAFE_HINTS = ("Can only create new object", "Can only build", "reduce")
_FIX_PICKLE = "save it with safetensors or as a plain state dict (torch.save(model.state_dict(), path))"


def _unpickler_detail(e: BaseException) -> str:
    """The specific reason inside torch's long weights-only error message."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text, re.S)
    return _first_line(found.group(1)) if found else _first_line(text)


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, turning its failures into :class:`CliError`."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _UNSAFE_GLOBAL.search(str(e))
        if unsafe:
            raise CliError(
                f"refusing to unpickle {path}: it holds an object of type {unsafe.group(1)}, and loading it "
                f"would need unsafe unpickling (arbitrary code execution); {_FIX_PICKLE}"
            ) from None
        detail = _unpickler_detail(e)
        if any(hint in detail for hint in _UNSAFE_HINTS):
            raise CliError(
                f"refusing to unpickle {path}: it is not a plain state dict that loads with weights_only=True "
                f"({detail}); {_FIX_PICKLE}"
            ) from None
        raise CliError(
            f"cannot read checkpoint {path}: it is neither a safetensors file nor a torch state dict ({detail})"
        ) from None
    except Exception as e:  # torch raises anything on a damaged file (KeyError, RuntimeError, ...
        raise CliError(
            f"cannot read checkpoint {path}: it is neither a safetensors file nor a torch state dict "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: BaseException | str) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The flat ``name -> tensor`` dict inside a loaded checkpoint."""
    if isinstance(obj, nn.Module):  # only reachable with unusual allow-lists
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CliError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)"
        )
    if not obj:
        raise CliError(f"checkpoint {path} is empty: it holds no tensors")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CliError(f"checkpoint {path} has a non-string key {key!r}; expected a state dict")
        if not isinstance(value, torch.Tensor):
            raise CliError(
                f"checkpoint {path} entry {key!r} is a {type(value).__name__}, not a tensor; "
                "save only the model's state dict"
            )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict from a safetensors file or a ``.pt``/``.pth`` file, on the CPU.

    Pickles are read with ``weights_only=True`` only; one that needs unsafe
    loading raises :class:`CliError`. A ``{"state_dict": ...}`` wrapper is
    unwrapped and a ``module.`` prefix on every key is removed.
    """
    p = Path(path)
    if not p.exists():
        raise CliError(f"no such checkpoint file: {p}")
    if p.is_dir():
        raise CliError(f"{p} is a directory; give a checkpoint file (.safetensors or .pt)")
    if _is_safetensors(p):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CliError(f"cannot read checkpoint {p} as safetensors: {_first_line(e)}") from None
    else:
        obj = _torch_load(p)
    return _unwrap(obj, p)


def _arch_flags(args: argparse.Namespace) -> str:
    """The architecture options as given, e.g. ``--arch mlp --width 32 --dataset fashion-mnist``."""
    given = [f"--{k} {v}" for k, v in _model_kwargs(args).items()]
    return " ".join([f"--arch {args.arch}", *given, f"--dataset {args.dataset}"])


def _arch_label(args: argparse.Namespace) -> str:
    """The architecture for people, e.g. ``mlp (width=32, depth=2)``."""
    kw = ", ".join(f"{k}={v}" for k, v in _model_kwargs(args).items())
    return f"{args.arch} ({kw})" if kw else args.arch


def check_fit(model: nn.Module, state: Mapping[str, torch.Tensor], label: str, args: argparse.Namespace) -> None:
    """Raise :class:`CliError` naming the first key where ``state`` does not fit ``model``, or a NaN."""
    reference = model.state_dict()
    fix = (
        f"does {label} have this architecture? pass its --width/--depth/--norm "
        f"(and --dataset, which sets the input size and classes); the model was {_arch_flags(args)}"
    )
    where = f"checkpoint {label} ({getattr(args, label.lower())})"
    for key in reference:
        if key not in state:
            raise CliError(f"{where} lacks {key!r}, which the model has; {fix}")
    for key in state:
        if key not in reference:
            raise CliError(f"{where} has {key!r}, which the model does not have; {fix}")
    for key, ref in reference.items():
        t = state[key]
        if t.shape != ref.shape:
            raise CliError(
                f"{where}: {key!r} has shape {tuple(t.shape)} in the checkpoint but {tuple(ref.shape)} "
                f"in the model; {fix}"
            )
        if t.is_floating_point() != ref.is_floating_point():
            raise CliError(f"{where}: {key!r} is {t.dtype} in the checkpoint but {ref.dtype} in the model; {fix}")
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CliError(
                f"{where}: {key!r} contains NaN or infinite values; the network diverged or the file is damaged"
            )


# --------------------------------------------------------------------------- #
# The two-network commands
# --------------------------------------------------------------------------- #
@dataclass
class Pair:
    """Everything ``align`` / ``barrier`` work on."""

    model: nn.Module
    data: Dataset
    device: torch.device
    state_a: dict[str, torch.Tensor]
    state_b: dict[str, torch.Tensor]


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("width", "depth", "norm") if getattr(args, k) is not None}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def _say(message: str) -> None:
    """Progress on stderr, only for a person watching a terminal."""
    if sys.stderr.isatty():
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _load_pair(args: argparse.Namespace) -> Pair:
    device = _device(args.device)
    state_a = load_checkpoint(args.a)
    state_b = load_checkpoint(args.b)
    _say(f"loading {args.dataset}")
    data = load_dataset(args.dataset, root=args.data_root, download=args.download)
    model = get_model(args.arch, **_model_kwargs(args), **data.model_kwargs)
    check_fit(model, state_a, "A", args)
    check_fit(model, state_b, "B", args)
    model = model.to(device).eval()
    return Pair(
        model=model,
        data=data,
        device=device,
        state_a={k: v.to(device) for k, v in state_a.items()},
        state_b={k: v.to(device) for k, v in state_b.items()},
    )


def _measure(pair: Pair, state_b: Mapping[str, torch.Tensor], args: argparse.Namespace) -> dict[str, BarrierResult]:
    """Barriers of the path from A to ``state_b`` on both splits."""
    out = {}
    for split in SPLITS:
        # the lab's defaults (BatchNorm batches, precision, ...), so the CLI and the claims agree
        options = BarrierOptions(n_examples=args.n_examples, alphas=args.alphas)
        out[split] = barrier(pair.model, pair.state_a, state_b, pair.data.split(split), options,
                             bn_data=pair.data.train, device=pair.device, split=split)
    return out


def _match(pair: Pair, args: argparse.Namespace) -> Permutation:
    from .activation_matching import activation_matching
    from .weight_matching import weight_matching

    _say(f"{args.method} matching")
    if args.method == "weight":
        return weight_matching(permutation_spec(pair.model), pair.state_a, pair.state_b, seed=args.seed)
    inputs = pair.data.train.take(args.n_examples)
    return activation_matching(pair.model, pair.state_a, pair.state_b, inputs, device=pair.device)


def _fmt_loss(x: float) -> str:
    return f"{x:.4f}"


def _fmt_error(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def format_table(rows: Mapping[str, Mapping[str, BarrierResult]]) -> str:
    """A text table: one row per path, columns loss / error barrier on train and test."""
    header = ["barrier", "train loss", "train error", "test loss", "test error"]
    lines = [header]
    for label, res in rows.items():
        lines.append(
            [
                label,
                _fmt_loss(res["train"].loss_barrier),
                _fmt_error(res["train"].error_barrier),
                _fmt_loss(res["test"].loss_barrier),
                _fmt_error(res["test"].error_barrier),
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in lines
    )


def _endpoint_lines(args: argparse.Namespace, res: Mapping[str, BarrierResult]) -> list[str]:
    test = res["test"]
    names = {"A": args.a, "B": args.b}
    width = max(len(str(p)) for p in names.values())
    return [
        f"{label}: {str(names[label]).ljust(width)}  test loss {_fmt_loss(test.loss_endpoints[i])}  "
        f"test error {_fmt_error(test.error_endpoints[i])}"
        for i, label in enumerate(("A", "B"))
    ]


def plot_curves(path: str | os.PathLike[str], curves: Mapping[str, BarrierResult], title: str) -> None:
    """Test loss and error vs alpha, one line per path; a PNG written atomically (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .fileio import atomic_path

    fig = Figure(figsize=(10.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, (metric, ylabel) in enumerate((("loss", "test loss (cross-entropy)"), ("error", "test error"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for label, res in curves.items():
            ax.plot(res.alphas, getattr(res, metric), marker="o", markersize=3, label=label)
        ax.set_xlabel("alpha (0 = A, 1 = B)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _barrier_values(res: Mapping[str, BarrierResult]) -> dict[str, dict[str, float]]:
    return {s: {"loss": r.loss_barrier, "error": r.error_barrier} for s, r in res.items()}


def _payload(
    args: argparse.Namespace,
    pair: Pair,
    results: Mapping[str, Mapping[str, BarrierResult]],
    perm: Permutation | None,
) -> dict[str, Any]:
    """The ``--json`` object."""
    from .jsonable import to_jsonable

    out: dict[str, Any] = {
        "command": args.command,
        "a": str(args.a),
        "b": str(args.b),
        "arch": args.arch,
        "model_kwargs": _model_kwargs(args),
        "dataset": args.dataset,
        "device": str(pair.device),
        "n_examples": args.n_examples,
        "alphas": args.alphas,
        "barriers": {k: _barrier_values(v) for k, v in results.items()},
        "curves": {k: {s: r.as_dict() for s, r in v.items()} for k, v in results.items()},
        "plot": str(args.plot) if args.plot else None,
    }
    if perm is not None:
        out.update(
            {
                "method": args.method,
                "seed": args.seed,
                "permutation": str(args.out) if args.out else None,
                "fixed_points": perm.fixed_points().as_dict(),
                "matching": dict(perm.stats),
            }
        )
    return to_jsonable(out)


def _save_permutation(perm: Permutation, args: argparse.Namespace) -> None:
    meta = {
        "a": str(args.a),
        "b": str(args.b),
        "arch": args.arch,
        "model_kwargs": json.dumps(_model_kwargs(args), sort_keys=True),
        "dataset": args.dataset,
        "method": args.method,
        "convention": "aligned B = P.apply(B)",
    }
    try:
        perm.save(args.out, metadata=meta)
    except OSError as e:
        raise CliError(f"cannot write the permutation to {args.out}: {e.strerror or e}") from None


def _run_pair(args: argparse.Namespace, align: bool) -> int:
    """Body of ``align`` (``align=True``) and ``barrier``."""
    pair = _load_pair(args)
    _say("measuring the barriers of A -> B")
    results: dict[str, dict[str, BarrierResult]] = {"before": _measure(pair, pair.state_b, args)}
    perm = None
    if align:
        perm = _match(pair, args)
        _say("measuring the barriers of A -> P[B]")
        results["after"] = _measure(pair, perm.apply(pair.state_b), args)
        if args.out:
            _save_permutation(perm, args)
    if args.plot:
        labels = {"before": "naive (A -> B)", "after": f"aligned (A -> P[B], {getattr(args, 'method', '')})"}
        title = f"{_arch_label(args)} on {args.dataset}: {Path(args.a).name} -> {Path(args.b).name}"
        try:
            plot_curves(args.plot, {labels[k]: v["test"] for k, v in results.items()}, title)
        except OSError as e:
            raise CliError(f"cannot write the plot to {args.plot}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(_payload(args, pair, results, perm), indent=2))
        return 0
    _print_summary(args, pair, results, perm)
    return 0


def _print_summary(
    args: argparse.Namespace,
    pair: Pair,
    results: Mapping[str, Mapping[str, BarrierResult]],
    perm: Permutation | None,
) -> None:
    before = results["before"]["test"]
    what = f", {args.method} matching" if perm is not None else ""
    print(
        f"{_arch_label(args)} on {args.dataset}{what}; {before.n_examples} examples per split, "
        f"{len(before.alphas)} alphas, {pair.device}"
    )
    print("\n".join(_endpoint_lines(args, results["before"])))
    print()
    rows = {"before (A -> B)": results["before"]}
    if "after" in results:
        rows[f"after (A -> P[B], {args.method})"] = results["after"]
    print(format_table(rows))
    if perm is not None:
        fp = perm.fixed_points()
        n = sum(fp.sizes.values())
        print()
        print(f"fixed points of P (units left in place): {fp.total}/{n} ({100.0 * fp.fraction:.1f}%)")
        print(f"permutation: {args.out}" if args.out else "permutation: not saved (use --out FILE)")
    if args.plot:
        print(f"plot: {args.plot}")


def cmd_align(args: argparse.Namespace) -> int:
    """``lmccheck align``."""
    return _run_pair(args, align=True)


def cmd_barrier(args: argparse.Namespace) -> int:
    """``lmccheck barrier``."""
    return _run_pair(args, align=False)


# --------------------------------------------------------------------------- #
# Parsers
# --------------------------------------------------------------------------- #
def _pair_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("a", metavar="A", help="checkpoint of network A (.safetensors, or .pt/.pth state dict)")
    p.add_argument("b", metavar="B", help="checkpoint of network B")
    g = p.add_argument_group("architecture")
    g.add_argument("--arch", required=True, choices=sorted(MODELS), help="model architecture")
    g.add_argument("--width", type=_width, default=None, help="units (mlp) or width multiplier (vgg, resnet)")
    g.add_argument("--depth", type=positive_int, default=None, help="hidden layers (mlp)")
    g.add_argument("--norm", choices=("none", "layernorm", "batchnorm"), default=None, help="normalization layers")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset (sets input size, classes)")
    g.add_argument("--data-root", metavar="DIR", default=None, help="root of the torchvision datasets")
    g.add_argument("--download", action="store_true", help="allow downloading the dataset")
    g = p.add_argument_group("measurement")
    g.add_argument(
        "--n-examples",
        type=positive_int,
        default=DEFAULT_N_EXAMPLES,
        metavar="N",
        help=f"examples per split (default {DEFAULT_N_EXAMPLES}); BatchNorm statistics are re-estimated at "
        "every alpha on as many training examples",
    )
    g.add_argument(
        "--alphas",
        type=_alpha_count,
        default=DEFAULT_ALPHAS,
        metavar="K",
        help=f"evenly spaced alphas in [0, 1] (default {DEFAULT_ALPHAS})",
    )
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available (default)")
    g = p.add_argument_group("output")
    g.add_argument("--plot", metavar="PNG", default=None, help="write test loss/error vs alpha to this PNG")
    g.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    return p

def add_pair_commands(sub: Any) -> None:
    """Add ``align`` and ``barrier`` to the ``lmccheck`` subparsers ``sub``."""
    pair = _pair_options()

    p = sub.add_parser(
        "align",
        parents=[pair],
        help="align B onto A; barriers before and after",
        description="Find the permutation P aligning B onto A and measure the barriers of A -> B and A -> P[B].",
    )
    p.add_argument("--method", choices=METHODS, default="weight", help="weight (default) or activation matching")
    p.add_argument("--seed", type=int, default=0, help="seed of weight matching's group order (default 0)")
    p.add_argument("--out", metavar="FILE", default=None, help="save the permutation (safetensors)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser(
        "barrier", parents=[pair], help="barriers of A -> B, no alignment", description="Barriers of A -> B."
    )
    p.set_defaults(func=cmd_barrier, out=None)
