"""Where the time goes: torch.profiler tables of one training epoch and one barrier evaluation.

    python tools/profile_gpu.py OUT_DIR                       # on a GPU: issue 16's cases
    python tools/profile_gpu.py OUT_DIR --device cpu --small  # a quick run of the same code on a CPU

Training: one epoch of ResNet-20 (LayerNorm) with Sharma et al.'s App. D recipe (SGD, augmentation, bf16
autocast on CUDA) on CIFAR-shaped synthetic data (the device machines cannot download CIFAR-10; throughput
does not depend on the pixels), after a short warm-up run. Barrier: 25 alphas x 10k test images between two
ResNet-20 16x networks with bf16 autocast. Each writes the profiler's operator table (sorted by device time
on CUDA, CPU time otherwise) to ``OUT_DIR/profile_train.txt`` and ``OUT_DIR/profile_barrier.txt``, and the
wall times to ``OUT_DIR/profile.json``. ``make gpu-check`` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmccheck.data import Dataset, Split
from lmccheck.barrier_options import BarrierOptions
from lmccheck.interpolation import barrier
from lmccheck.models import get_model
from lmccheck.training import TrainConfig, train


def synthetic(n_train: int, n_test: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(name="cifar10", train=Split(torch.randn(n_train, 3, 32, 32, generator=g),
                                                torch.randint(0, 10, (n_train,), generator=g)),
                   test=Split(torch.randn(n_test, 3, 32, 32, generator=g),
                              torch.randint(0, 10, (n_test,), generator=g)),
                   num_classes=10, in_channels=3, input_size=32, mean=(0.0,) * 3, std=(1.0,) * 3, augmentable=True)


def _table(prof: profile, device: str, rows: int = 30) -> str:
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--small", action="store_true", help="tiny sizes, to check the script itself (seconds)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("profile_gpu: CUDA is not available; pass --device cpu (with --small) to try it here", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    n_train, n_test, width, wide, alphas = (512, 256, 0.25, 0.5, 3) if args.small else (50_000, 10_000, 1.0, 16.0, 25)
    data = synthetic(n_train, n_test)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    cfg = TrainConfig(arch="resnet20", model_kwargs={"width": width, "norm": "layernorm"}, dataset="cifar10",
                      epochs=1.0, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_epochs=0.5,
                      augment=True, device=args.device, precision="bf16", eval_examples=min(1000, n_test))
    # warm-up: CUDA context, cuDNN autotuning
    train(cfg.replace(epochs=0.1, warmup_epochs=0.0), data=data, progress=False)
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run = train(cfg, data=data, progress=False)
        sync()
        train_s = time.perf_counter() - t0
    (args.out / "profile_train.txt").write_text(
        f"one epoch, resnet20 {width:g}x LN, {n_train} images, batch 128, {args.device}: {train_s:.2f} s "
        f"(train() says {run.wall_time_s:.2f} s)\n\n" + _table(prof, args.device))

    torch.manual_seed(0)
    model = get_model("resnet20", width=wide, norm="layernorm", in_channels=3, input_size=32)
    a = model.state_dict()
    torch.manual_seed(1)
    b = get_model("resnet20", width=wide, norm="layernorm", in_channels=3, input_size=32).state_dict()
    bf16 = BarrierOptions(precision="bf16")
    barrier(model, a, b, data.test, bf16.replace(alphas=2, n_examples=min(256, n_test)), device=args.device)  # warm-up
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        barrier(model, a, b, data.test, bf16.replace(alphas=alphas, n_examples=n_test), device=args.device)
        sync()
        barrier_s = time.perf_counter() - t0
    (args.out / "profile_barrier.txt").write_text(
        f"barrier, resnet20 {wide:g}x LN, {alphas} alphas x {n_test} images, bf16 autocast, {args.device}: "
        f"{barrier_s:.2f} s\n\n" + _table(prof, args.device))
    summary = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "train_epoch_s": train_s, "train_images": n_train, "train_width": width,
               "barrier_s": barrier_s, "barrier_alphas": alphas, "barrier_images": n_test, "barrier_width": wide}
    (args.out / "profile.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
