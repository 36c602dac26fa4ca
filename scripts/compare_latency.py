#!/usr/bin/env python
"""Latency of this checkout against an older commit, interleaved old/new/new/old in one session so that the
machine's load cancels out; prints each run's median and the ratio new/old.

    python scripts/compare_latency.py [--old 3a6a67c] [--rounds 1] -- -c configs/htc/htc_r50_fpn_1x_coco.yml \\
        --image_size 800 1333 --iters 3 --warmup 1

Everything after ``--`` goes to both ``scripts/benchmark.py`` runs (so it must be understood by the old one
too). The old commit runs from a temporary ``git worktree`` with the environment's process switches removed
(``MKL_DEBUG_CPU_TYPE``, ``PPDET_HTC_*``); the new one runs with its defaults, or with ``--new_args`` added
(e.g. ``--new_args="--runtime dynamic"``). Exit code 0 when new/old <= ``--target`` (default 0.4).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCHES = ("MKL_DEBUG_CPU_TYPE", "PPDET_HTC_EXACT", "PPDET_HTC_RUNTIME")


def _run_benchmark(root, args, json_path, env):
    cmd = [sys.executable, os.path.join(root, "scripts", "benchmark.py")] + args + ["--json", json_path]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(json_path) as f:
        return json.load(f)["latency_ms"]["median"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="3a6a67c", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=1, help="old/new/new/old rounds")
    p.add_argument("--new_args", default="", help="extra benchmark.py arguments for the new runs only")
    p.add_argument("--target", type=float, default=0.4, help="pass when new/old <= this")
    p.add_argument("--json", default=None, help="write the runs and the ratio here")
    args = p.parse_args(own)
    if not bench_args:
        p.error("give the benchmark arguments after --, e.g. -- -c configs/htc/htc_r50_fpn_1x_coco.yml")
    tmp = tempfile.mkdtemp(prefix="ppdet_htc_compare_")
    old_root = os.path.join(tmp, "old")
    try:
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", old_root, args.old], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit("compare_latency: cannot check out revision {!r} of {}".format(args.old, REPO))
    old_env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    new_env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    new_args = bench_args + (args.new_args.split() if args.new_args else [])
    runs = {"old": [], "new": []}
    try:
        for r in range(args.rounds):
            for i, which in enumerate(("old", "new", "new", "old")):
                path = os.path.join(tmp, "{}_{}_{}.json".format(r, i, which))
                if which == "old":
                    ms = _run_benchmark(old_root, bench_args, path, old_env)
                else:
                    ms = _run_benchmark(REPO, new_args, path, new_env)
                runs[which].append(ms)
                print("{:>3s}: median {:.1f} ms".format(which, ms), flush=True)
    finally:
        subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", old_root], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = statistics.median(runs["new"]) / statistics.median(runs["old"])
    print("old {} median {:.1f} ms | new median {:.1f} ms | new/old = {:.3f} (target <= {})".format(
        args.old, statistics.median(runs["old"]), statistics.median(runs["new"]), ratio, args.target))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"old": args.old, "runs_ms": runs, "ratio": ratio, "benchmark_args": bench_args,
                       "new_args": new_args}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0 if ratio <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
