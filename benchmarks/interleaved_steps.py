"""Training steps of gattn's TransformerConv under several node orders (and, optionally, two
source trees), alternated process by process: an A/B that a noisy machine cannot bias.

Each (tree, reorder) measurement runs in its own process: one graph of
``benchmarks/edge_attention.py`` (``--graph``), one thread, ``--warmup`` steps, then the
median of ``--steps`` training steps (forward, loss, backward, Adam) and of as many
no-grad forwards, and the process's peak RSS. Rounds go through every combination in turn,
so a slow spell of the machine falls on all of them alike; the table gives every round and
the median over rounds.

    python benchmarks/interleaved_steps.py --graph knn --reorder none,auto --rounds 3
    git worktree add /tmp/before <commit>   # an older gattn, to compare with
    python benchmarks/interleaved_steps.py --graph knn --reorder rcm --trees /tmp/before,.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, REPO)


def measure(spec: dict) -> dict:
    """One (tree, reorder) measurement, in this process."""
    root = os.path.abspath(spec["tree"])
    sys.path.insert(0, root)
    import numba
    import torch

    import gattn
    import gattn.nn

    if not os.path.abspath(gattn.__file__).startswith(root + os.sep):
        raise RuntimeError(f"gattn was imported from {gattn.__file__}, not from {root}")
    from benchmarks._common import peak_rss_mb
    from benchmarks.edge_attention import make_graph

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    torch.manual_seed(0)
    edge_index, nodes = make_graph(spec["graph"], spec["nodes"], spec["edges"])
    x = torch.randn(nodes, spec["heads"] * spec["dim"])
    reorder = None if spec["reorder"] == "none" else spec["reorder"]
    layer = gattn.nn.TransformerConv(x.size(1), spec["dim"], heads=spec["heads"], root_weight=False,
                                     reorder=reorder)
    optimizer = torch.optim.Adam(layer.parameters())

    def step() -> None:
        optimizer.zero_grad()
        layer(x, edge_index).square().mean().backward()
        optimizer.step()

    for _ in range(spec["warmup"]):
        step()
    steps, forwards = [], []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        steps.append(time.perf_counter() - start)
    with torch.no_grad():
        for _ in range(spec["steps"]):
            start = time.perf_counter()
            layer(x, edge_index)
            forwards.append(time.perf_counter() - start)
    return {"step_s": statistics.median(steps), "fwd_s": statistics.median(forwards), "peak_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--graph", default="knn", help="a graph of benchmarks/edge_attention.py (default: knn)")
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--edges", type=int, default=None, help="default: 16 per node for knn, else 20 per node")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--reorder", default="none,auto", help="comma-separated: none, auto, rcm, metis")
    parser.add_argument("--trees", default=".", help="comma-separated source trees holding gattn (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=9)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    from benchmarks._common import machine, print_table, run_child

    edges = args.edges or args.nodes * (16 if args.graph == "knn" else 20)
    trees = [os.path.abspath(t) for t in args.trees.split(",")]
    for tree in trees:
        if not os.path.isfile(os.path.join(tree, "gattn", "__init__.py")):
            raise SystemExit(f"--trees: no gattn package in {tree} (looked for {tree}/gattn/__init__.py)")
    combos = list(itertools.product(trees, args.reorder.split(",")))
    results: dict[tuple[str, str], list[dict]] = {combo: [] for combo in combos}
    rows = []
    for round_ in range(1, args.rounds + 1):
        for tree, reorder in combos:
            spec = dict(tree=tree, reorder=reorder, graph=args.graph, nodes=args.nodes, edges=edges,
                        heads=args.heads, dim=args.dim, warmup=args.warmup, steps=args.steps)
            res = run_child("benchmarks.interleaved_steps", spec)
            if "error" in res:
                raise SystemExit(f"{tree} reorder={reorder}: failed: {res['error']}")
            results[(tree, reorder)].append(res)
            rows.append([round_, tree, reorder, f"{res['step_s']:.4f}", f"{res['fwd_s']:.4f}", f"{res['peak_mb']:.0f}"])
            print("  ".join(str(c) for c in rows[-1]), flush=True)
    for (tree, reorder), runs in results.items():
        rows.append(["median", tree, reorder] + [
            f"{statistics.median(r[key] for r in runs):{fmt}}"
            for key, fmt in (("step_s", ".4f"), ("fwd_s", ".4f"), ("peak_mb", ".0f"))])
    print_table(f"TransformerConv training steps, {args.graph} N={args.nodes:,} E={edges:,} H={args.heads} "
                f"D={args.dim}, one thread, processes alternated; medians of {args.steps} steps per process; "
                f"{machine()}",
                ["round", "tree", "reorder", "step s", "forward s", "peak RSS MB"], rows)


if __name__ == "__main__":
    main()
