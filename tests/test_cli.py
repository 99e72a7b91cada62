"""End-to-end tests of the ``lmccheck`` command (:mod:`lmccheck.cli`).

Two tiny MLPs (width 32, depth 2) are trained once per module on 2000
Fashion-MNIST examples (200 steps, about two seconds); every command then runs
on 500 examples and 5 alphas, so the whole file takes seconds on one core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmccheck.cli import CliError, _names_claims_path, main
from lmccheck.pair_commands import load_checkpoint
from lmccheck.models import get_model
from lmccheck.permutation import Permutation, permutation_spec
from lmccheck.figures import make_figure_spec
from lmccheck.report import write_report
from lmccheck.store import Store
from lmccheck.training import TrainConfig, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ARCH = ["--arch", "mlp", "--width", "32", "--depth", "2", "--dataset", "fashion-mnist"]
FAST = ["--n-examples", "500", "--alphas", "5", "--device", "cpu"]
TOL = 1e-6


class Opaque:
    """A custom class: a checkpoint holding one needs unsafe unpickling."""

    def __init__(self) -> None:
        self.weights = torch.zeros(3)


def _config(seed: int) -> TrainConfig:
    return TrainConfig(
        arch="mlp",
        model_kwargs={"width": 32, "depth": 2},
        train_subset=2000,
        epochs=10,  # 20 steps per epoch: 200 steps
        batch_size=100,
        warmup_epochs=0.5,
        eval_examples=256,
        init_seed=seed,
        sgd_seed=seed,
    )


def _save(state: dict[str, torch.Tensor], path: Path) -> str:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of checkpoints: two trained networks, a permuted copy of A, and damaged files."""
    d = tmp_path_factory.mktemp("ckpt")
    a, b = (dict(train(_config(seed), progress=False).final) for seed in (0, 1))
    spec = permutation_spec(get_model("mlp", width=32, depth=2))
    q = Permutation.random(spec, a, seed=7)
    nan = dict(a)
    nan["layers.1.weight"] = nan["layers.1.weight"].clone()
    nan["layers.1.weight"][3, 5] = float("nan")
    paths = {
        "a": _save(a, d / "a.safetensors"),
        "b": _save(b, d / "b.safetensors"),
        "qa": _save(q.apply(a), d / "qa.safetensors"),
        "nan": _save(nan, d / "nan.safetensors"),
        "b_pt": str(d / "b.pt"),
        "wrapped_pt": str(d / "wrapped.pt"),
        "unsafe_pt": str(d / "unsafe.pt"),
        "namespace_pt": str(d / "namespace.pt"),
        "nontensor_pt": str(d / "nontensor.pt"),
        "junk_pt": str(d / "junk.pt"),
    }
    torch.save(b, paths["b_pt"])
    torch.save({"epoch": 10, "state_dict": b}, paths["wrapped_pt"])
    torch.save({"w": Opaque()}, paths["unsafe_pt"])
    torch.save(argparse.Namespace(lr=0.1, weights=a), paths["namespace_pt"])
    torch.save({**a, "epoch": 10}, paths["nontensor_pt"])
    Path(paths["junk_pt"]).write_bytes(b"not a checkpoint at all" * 4)
    return paths


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """Run ``lmccheck ... --json`` and parse its output."""
    rc = main([*args, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- align
@pytest.mark.slow
@pytest.mark.parametrize("method", ["weight", "activation"])
def test_align_permuted_copy_gives_zero_barrier(ckpt, tmp_path, capsys, method):
    out = tmp_path / "perm.safetensors"
    res = run_json(capsys, "align", ckpt["a"], ckpt["qa"], *ARCH, *FAST, "--method", method, "--out", str(out))
    for split in ("train", "test"):
        after = res["barriers"]["after"][split]
        assert abs(after["loss"]) < TOL and abs(after["error"]) < TOL, (split, after)
        assert res["barriers"]["before"][split]["loss"] > 0.01  # the permuted copy is not aligned to begin with
    assert res["permutation"] == str(out) and res["method"] == method
    spec = permutation_spec(get_model("mlp", width=32, depth=2))
    p = Permutation.load(out, spec)
    aligned = p.apply(load_file(ckpt["qa"]))
    a = load_file(ckpt["a"])
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_align_permuted_copy_with_norm_layers(tmp_path, capsys, norm):
    """Untrained networks with norm layers (BatchNorm statistics re-estimated at every alpha)."""
    torch.manual_seed(0)
    model = get_model("mlp", width=16, depth=2, norm=norm)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    if norm == "batchnorm":  # non-trivial running statistics, so that the permutation must move them too
        a = {k: (v + torch.rand_like(v) if "running" in k else v) for k, v in a.items()}
    b = Permutation.random(model.permutation_spec(), a, seed=1).apply(a)
    pa, pb = _save(a, tmp_path / "a.safetensors"), _save(b, tmp_path / "b.safetensors")
    arch = ["--arch", "mlp", "--width", "16", "--depth", "2", "--norm", norm, "--dataset", "fashion-mnist"]
    res = run_json(capsys, "align", pa, pb, *arch, *FAST)
    assert res["curves"]["after"]["test"]["bn_reset"] is (norm == "batchnorm")
    for split in ("train", "test"):
        after = res["barriers"]["after"][split]
        assert abs(after["loss"]) < TOL and abs(after["error"]) < TOL, (split, after)


@pytest.mark.slow
def test_align_json_has_every_key_and_plot_is_png(ckpt, tmp_path, capsys):
    plot = tmp_path / "sub" / "curve.png"
    res = run_json(capsys, "align", ckpt["a"], ckpt["b"], *ARCH, *FAST, "--plot", str(plot))
    keys = ("a", "b", "arch", "model_kwargs", "dataset", "method", "seed", "n_examples", "alphas", "barriers")
    keys += ("curves", "permutation", "fixed_points", "matching", "plot", "device")
    assert set(keys) <= set(res), set(keys) - set(res)
    assert res["model_kwargs"] == {"width": 32, "depth": 2}
    assert res["permutation"] is None and res["plot"] == str(plot)
    assert res["matching"]["method"] == "weight" and res["matching"]["converged"] is True
    assert set(res["fixed_points"]) >= {"per_group", "total", "fraction"}
    for when in ("before", "after"):
        for split in ("train", "test"):
            curve = res["curves"][when][split]
            assert curve["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
            assert len(curve["loss"]) == len(curve["error"]) == 5
            assert curve["n_examples"] == 500 and curve["split"] == split
            assert res["barriers"][when][split] == {"loss": curve["loss_barrier"], "error": curve["error_barrier"]}
    # two independently trained networks: alignment lowers the test loss barrier
    assert res["barriers"]["after"]["test"]["loss"] < res["barriers"]["before"]["test"]["loss"]
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_align_prints_table(ckpt, tmp_path, capsys):
    rc = main(["align", ckpt["a"], ckpt["b_pt"], *ARCH, *FAST, "--method", "activation"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "before (A -> B)" in out and "after (A -> P[B], activation)" in out
    assert "test loss" in out and "train error" in out
    assert f"A: {ckpt['a']}" in out and f"B: {ckpt['b_pt']}" in out
    assert "not saved (use --out FILE)" in out


# --------------------------------------------------------------------------- barrier
def test_barrier_prints_before_numbers(ckpt, capsys):
    rc = main(["barrier", ckpt["a"], ckpt["b_pt"], *ARCH, *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "before (A -> B)" in out and "after" not in out and "permutation" not in out
    res = run_json(capsys, "barrier", ckpt["a"], ckpt["b"], *ARCH, *FAST)
    assert set(res["barriers"]) == {"before"} and "permutation" not in res
    before = res["barriers"]["before"]
    assert before["test"]["loss"] > 0.01
    assert f"{before['test']['loss']:.4f}" in out and f"{100 * before['train']['error']:.2f}%" in out


def test_pt_wrapped_and_safetensors_checkpoints_agree(ckpt, capsys):
    names = ("b", "b_pt", "wrapped_pt")
    results = [run_json(capsys, "barrier", ckpt["a"], ckpt[b], *ARCH, *FAST)["barriers"] for b in names]
    assert results[0] == results[1] == results[2]


def test_load_checkpoint_strips_data_parallel_prefix(tmp_path):
    path = tmp_path / "dp.pt"
    torch.save({"module.w": torch.ones(2), "module.b": torch.zeros(1)}, path)
    assert set(load_checkpoint(path)) == {"w", "b"}
    with pytest.raises(CliError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


# --------------------------------------------------------------------------- errors
def _expect_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    ("a", "b", "extra", "needles"),
    [
        ("missing", "b", [], ["lmccheck: error: no such checkpoint file", "missing.safetensors"]),
        ("a", "unsafe_pt", [], ["lmccheck: error: refusing to unpickle", "Opaque", "safetensors", "plain state dict"]),
        ("namespace_pt", "b", [], ["refusing to unpickle", "argparse.Namespace"]),
        ("a", "nan", [], ["checkpoint B", "'layers.1.weight'", "NaN"]),
        ("a", "nontensor_pt", [], ["'epoch' is a int, not a tensor"]),
        ("a", "junk_pt", [], ["cannot read checkpoint", "neither a safetensors file nor a torch state dict"]),
        ("a", "b", ["--width", "64"], ["checkpoint A", "'layers.0.weight'", "(32, 784)", "(64, 784)", "--width"]),
        ("a", "b", ["--depth", "3"], ["checkpoint A", "lacks 'layers.2.weight'", "--depth"]),
        ("a", "b", ["--norm", "layernorm"], ["lacks 'norms.0.weight'", "--norm"]),
    ],
)
def test_bad_checkpoints_give_clear_errors(ckpt, tmp_path, capsys, a, b, extra, needles):
    paths = {**ckpt, "missing": str(tmp_path / "missing.safetensors")}
    arch = ["--arch", "mlp", "--width", "32", "--depth", "2", "--dataset", "fashion-mnist"]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in arch:
            arch[arch.index(flag) + 1] = value
        else:
            arch += [flag, value]
    _expect_error(capsys, ["align", paths[a], paths[b], *arch, *FAST], *needles)


def test_unknown_names_and_missing_dataset(ckpt, tmp_path, capsys):
    base = ["barrier", ckpt["a"], ckpt["b"], "--width", "32", "--depth", "2", *FAST]
    _expect_error(capsys, [*base, "--arch", "mlp", "--dataset", "imagenet"], "invalid choice: 'imagenet'")
    _expect_error(capsys, [*base, "--arch", "resnet18", "--dataset", "fashion-mnist"], "invalid choice: 'resnet18'")
    err = _expect_error(
        capsys,
        [*base, "--arch", "mlp", "--dataset", "cifar10", "--data-root", str(tmp_path / "nodata")],
        "cifar10",
    )
    assert "--download" in err and "--lmc-download" not in err
    _expect_error(capsys, ["barrier", ckpt["a"], ckpt["b"], *FAST], "--arch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda(ckpt, capsys):
    argv = ["barrier", ckpt["a"], ckpt["b"], *ARCH, "--n-examples", "500", "--alphas", "5", "--device", "cuda"]
    _expect_error(capsys, argv, "CUDA is not available")


def test_help_and_version_exit_zero(capsys):
    assert main(["--version"]) == 0
    assert "lmccheck" in capsys.readouterr().out
    assert main(["align", "--help"]) == 0
    assert "--method" in capsys.readouterr().out
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("lmccheck")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("lmccheck")
    return [found] if found else [sys.executable, "-m", "lmccheck.cli"]


@pytest.mark.slow
def test_console_script_runs_in_a_subprocess(ckpt):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run(
        [*_cli_command(), "barrier", ckpt["a"], ckpt["b"], *ARCH, *FAST],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "before (A -> B)" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lmccheck.cli", "align", ckpt["unsafe_pt"], ckpt["b"], *ARCH, *FAST],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("lmccheck: error: refusing to unpickle") and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- cache
@pytest.fixture
def store(tmp_path) -> tuple[Store, str]:
    s = Store(tmp_path / "cache")
    entry = s.put("train", {"arch": "mlp", "width": 32, "seed": 0}, {"w": torch.zeros(4)}, {"metrics": {"acc": 0.9}})
    return s, entry.key


def test_cache_ls_and_info(store, capsys):
    s, key = store
    assert main(["cache", "--cache", str(s.root), "ls"]) == 0
    out = capsys.readouterr().out
    assert key[:12] in out and "train" in out and "arch=mlp width=32 seed=0" in out and "ok" in out
    assert "1 entry" in out
    assert main(["cache", "ls", "--cache", str(s.root), "--json"]) == 0  # --cache after the action works too
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == [key] and rows[0]["status"] == "ok"
    assert main(["cache", "--cache", str(s.root), "info", key[:8]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["key"] == key and info["kind"] == "train" and info["metrics"] == {"acc": 0.9}
    _expect_error(capsys, ["cache", "--cache", str(s.root), "info", "abcdef12"], "no cache entry matches")
    _expect_error(capsys, ["cache", "--cache", str(s.root), "info", "xyz"], "not a key or key prefix")


def test_cache_ls_starts_without_torch(store):
    """``lmccheck cache ls`` lists a store in a process that never loads torch (0.2 s against 2.7 s; ``info``
    verifies the entry's tensors by loading them, so it loads torch)."""
    s, key = store
    code = ("import sys; from lmccheck.cli import main; "
            f"rc = main(['cache', '--cache', {str(s.root)!r}, 'ls']); print('torch' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert key[:12] in out and out.strip().splitlines()[-1] == "False 0"


def test_cache_ls_uses_env_var(store, capsys, monkeypatch):
    s, key = store
    monkeypatch.setenv("LMCCHECK_CACHE", str(s.root))
    assert main(["cache", "ls"]) == 0
    assert key[:12] in capsys.readouterr().out


def test_cache_clear_needs_confirmation(store, capsys, monkeypatch):
    s, key = store
    root = str(s.root)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    _expect_error(capsys, ["cache", "--cache", root, "clear"], "without confirmation", "--yes")
    assert s.keys() == [key]

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    assert main(["cache", "--cache", root, "clear"]) == 1
    assert "nothing removed" in capsys.readouterr().out and s.keys() == [key]

    assert main(["cache", "--cache", root, "clear", "--kind", "spawn", "--yes"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out and s.keys() == [key]

    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    assert main(["cache", "--cache", root, "clear", "--kind", "train"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out and s.keys() == []
    assert main(["cache", "--cache", root, "ls"]) == 0
    assert "empty" in capsys.readouterr().out


# --------------------------------------------------------------------------- report
def test_report_rerenders_markdown_and_figures(tmp_path, capsys):
    record = {
        "claim": "S3",
        "setting": "mlp-tiny",
        "nodeid": "claims/test_s3.py::test_x",
        "verdict": "PASS",
        "values": {"barrier": 0.01},
        "figures": [make_figure_spec("barrier_vs_alpha", {"naive": ([0, 0.5, 1], [0.1, 0.9, 0.1])})],
    }
    write_report([record], tmp_path / "report", {"version": "test"})
    out_dir = tmp_path / "rerendered"
    assert main(["report", str(tmp_path / "report" / "claims.json"), "--out", str(out_dir)]) == 0
    assert "1 figure" in capsys.readouterr().out
    assert "S3" in (out_dir / "claims.md").read_text()
    pngs = list((out_dir / "figures").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == PNG_SIGNATURE

    (tmp_path / "report" / "claims.md").unlink()
    assert main(["report", str(tmp_path / "report" / "claims.json")]) == 0  # in place
    assert (tmp_path / "report" / "claims.md").is_file()
    capsys.readouterr()

    _expect_error(capsys, ["report", str(tmp_path / "none.json")], "no such report file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _expect_error(capsys, ["report", str(bad)], "not valid JSON")


# --------------------------------------------------------------------------- claims
def test_claims_without_claims_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _expect_error(capsys, ["claims", "-q"], "no claims/ folder")


@pytest.mark.slow
def test_claims_runs_pytest_on_the_claims_folder(tmp_path, capfd, monkeypatch):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "test_fake.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["claims", "-q", "-p", "no:cacheprovider", "--lmc-no-report"]) == 1  # pytest's exit code
    assert "1 failed, 1 passed" in capfd.readouterr().out


def test_claims_paths_inside_claims_replace_the_folder(tmp_path, monkeypatch):
    claims = tmp_path / "claims"
    (claims / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    resolved = claims.resolve()
    assert _names_claims_path("claims/test_x.py::test_ok", resolved)
    assert _names_claims_path("claims/sub", resolved)
    assert _names_claims_path("claims", resolved)
    assert not _names_claims_path("report", resolved)
    assert not _names_claims_path("-k", resolved) and not _names_claims_path("S3", resolved)


@pytest.mark.slow
def test_claims_leading_ids_select_claims(tmp_path, capfd, monkeypatch):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "test_fake.py").write_text(
        "import pytest\nfrom lmccheck.verdict import reading\n\n"
        "def _holds(measure, holds=True):\n    measure.expect_exact('x', holds, 0.0, '== 0', reading('a test'))\n\n"
        "@pytest.mark.claim('S2')\ndef test_s2(measure):\n    _holds(measure)\n\n"
        "@pytest.mark.claim('S12')\ndef test_s12(measure):\n    _holds(measure)\n\n"
        "@pytest.mark.claim('S5')\ndef test_s5(measure):\n    _holds(measure, False)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["claims", "S2", "-q", "-p", "no:cacheprovider", "--lmc-no-report"]) == 0
    assert "1 passed, 2 deselected" in capfd.readouterr().out
    assert main(["claims", "s2,S5", "S12", "-q", "-p", "no:cacheprovider", "--lmc-no-report"]) == 1
    assert "1 failed, 2 passed" in capfd.readouterr().out


def _judged_report(path: Path, outcome: str, observed: float, interval: tuple[float, float]) -> Path:
    assertion = {"name": "aligned below", "rule": "Below", "bound": "< 0.05", "outcome": outcome,
                 "observed": observed, "interval": list(interval), "level": 0.95, "n": 3, "df": 2.0, "mde": 0.06,
                 "seeds_needed": None, "source": {"kind": "paper", "text": "3-8%", "where": "§5.1"}, "over": None,
                 "points": [], "decides": True, "note": ""}
    record = {"claim": "S3", "setting": "mlp", "nodeid": "claims/test_s3.py::test_s3[mlp]", "verdict": outcome,
              "assertions": [assertion]}
    write_report([record], path, {"version": "test"})
    return path / "claims.json"


def test_report_compares_two_reports_and_tables_outcomes_and_verdicts(tmp_path, capsys):
    old = _judged_report(tmp_path / "old", "PASS", 0.01, (0.0, 0.02))
    new = _judged_report(tmp_path / "new", "FAIL", 0.09, (0.07, 0.11))
    assert main(["report", str(new), "--compare", str(old)]) == 1  # a PASS -> FAIL flip
    out = capsys.readouterr().out
    assert "!! claims/test_s3.py::test_s3[mlp] :: aligned below: outcome flipped: PASS -> FAIL" in out
    assert "!! claims/test_s3.py::test_s3[mlp]: verdict flipped: PASS -> FAIL" in out
    assert "estimate moved beyond its interval" in out and "2 PASS <-> FAIL flip(s)" in out  # verdict, assertion
    assert main(["report", str(old), "--compare", str(old)]) == 0
    assert "0 change(s)" in capsys.readouterr().out

    assert main(["report", str(new), "--outcomes", str(old)]) == 0
    table = capsys.readouterr().out
    assert f"| check | assertion | {new} | {old} |" in table
    assert "| claims/test_s3.py::test_s3[mlp] | aligned below | FAIL | PASS |" in table

    assert main(["report", str(new), "--verdict-table"]) == 0
    assert "| S3 | mlp | FAIL | aligned below: FAIL 0.09 [0.07, 0.11] (95%) |" in capsys.readouterr().out
    _expect_error(capsys, ["report", str(new), "--compare", str(tmp_path / "none.json")], "cannot read")
