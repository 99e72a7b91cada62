#!/usr/bin/env bash
# The prepared device check (make gpu-check): on a CUDA machine, the unit tests with their CUDA cases, the GPU
# benchmarks, profiler tables of one training epoch and one barrier (tools/profile_gpu.py) and the claims' GPU
# settings at the dry-run size (--lmc-budget dryrun), each under its own time limit; log, benchmark JSON, profiles and claim report
# in one folder. Exit status: the number of steps that failed (0: all passed).
#
#   tools/gpu_check.sh OUT_DIR        (PY: the interpreter, default python3; LMCCHECK_CACHE: the store)
set -u
out=${1:-gpu-check}
py=${PY:-python3}
store=${LMCCHECK_CACHE:-/tmp/lmccheck-gpu-check-store}
workers=${GPU_CHECK_WORKERS:-8}
mkdir -p "$out"
log="$out/gpu-check.log"
: >"$log"
failed=0
rc_last=0

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$log"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    rc_last=$rc
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: CUDA is not available to $py; run it on a machine with an NVIDIA GPU" | tee -a "$log"
    exit 2
fi
"$py" - <<'PY' 2>&1 | tee -a "$log"
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(),
      f"| {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY

# unit tests, the CUDA cases included (-m '' lifts the default 'not gpu'), on the host's cores
step "unit tests (CUDA cases included)" 150 "$py" -m pytest tests -q -m '' -n "$workers" -p no:cacheprovider
# GPU benchmarks: training epochs, ensemble, weight matching, barrier (targets recorded in extra_info)
step "GPU benchmarks" 180 "$py" -m pytest benchmarks/test_gpu.py benchmarks/test_training.py -m gpu -q \
    --benchmark-only --benchmark-json "$out/benchmarks.json" -p no:cacheprovider
# where the time goes: profiler tables of one training epoch and one barrier evaluation
step "profiles (one epoch, one barrier)" 90 "$py" tools/profile_gpu.py "$out/profile"
# every claim's GPU setting at the dry-run size (each recipe on its own dataset, CIFAR-10 a synthetic stand-in,
# 1/16 of its width, 256 examples, 2 epochs, 5-alpha barriers, 2 seeds: every claim's whole path on CUDA in
# minutes; the smoke budget takes 13-36 min on one H100, tools/gpu_cost.py). A claim that fails its assertion at
# this size is shown as FAIL like any other; the step fails when a check errs (a crash, a measurement bug), never
# ran, or pytest itself failed
"$py" -m lmccheck.cli data synthetic cifar10 --root "$out/data" >> "$log" 2>&1
step "claims, GPU settings at --lmc-budget dryrun" 240 "$py" -m pytest claims -m gpu --lmc-budget dryrun \
    --lmc-data-root "$out/data" --lmc-train-together --lmc-device cuda --lmc-cache "$store" \
    --lmc-report "$out/report" -p no:cacheprovider
claims_rc=$rc_last
if [ "$claims_rc" -eq 1 ]; then  # some checks failed: findings, unless one of them erred
    failed=$((failed - 1))
    "$py" - "$out/report/claims.json" <<'PY' 2>&1 | tee -a "$log" || failed=$((failed + 1))
import json, sys
records = json.load(open(sys.argv[1]))["records"]
bad = [r for r in records if r.get("verdict") not in ("PASS", "FAIL", "INCONCLUSIVE", "XFAIL", "XPASS", "SKIP")]
for r in records:
    print(f"  {r['claim']:4} {r['setting']:40} {r.get('verdict')}")
print(f"gpu-check: {len(bad)} dry-run check(s) erred or did not run" if bad else "gpu-check: every dry-run check ran")
sys.exit(1 if bad else 0)
PY
fi

echo "gpu-check: $failed step(s) failed; log $log, report $out/report, benchmarks $out/benchmarks.json," \
    "profiles $out/profile" | tee -a "$log"
exit "$failed"
