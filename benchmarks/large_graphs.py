"""Large graphs: full-batch vs neighbour-sampled mini-batch training, and full-graph vs
layer-wise inference, for gattn's Graph Transformer layer against PyG's TransformerConv and
GATConv in the same model and loader (:class:`gattn.models.node_gnn.NodeGNN`).

Graphs: ogbn-arxiv's size (169,343 nodes, 1,166,243 edges, 128 features, 40 classes; the real
graph when its raw files are under ``--root``, else a random one) and ogbn-products' size
(2,449,029 nodes, 61,859,140 edges, 100 features, 47 classes; ``--products-scale`` shrinks it).
Each graph is built once, by a child process, and saved to a temporary file that every
measuring process loads.

Per graph and layer, each in its own process: one training epoch full-batch (forward and
backward over the whole graph, loss on the training nodes) and one mini-batch epoch over the
training nodes (``--fanout`` neighbours per hop, ``--batch-size`` seeds), then inference over
every node full-graph and layer by layer (``--inference-batch-size`` destinations with all
their neighbours). Time: the median over ``--repeats`` (after a warm-up; ``--no-warmup``: the
first call) for full-batch and inference; for mini-batches one whole epoch after a warm-up of
three batches, or ``--max-batches`` batches extrapolated to the epoch (the table says so).
Memory: the process's peak resident memory above what it held once the graph was loaded
(Linux ``clear_refs`` resets the peak there). Every measuring process runs under a hard
address-space cap (``--memory-cap-gb``, default 14 GiB, so that the machine's other work is
never the OOM killer's victim): a method that needs more fails cleanly and its row says
"does not fit in N GiB" with a lower bound of what it needed (what it held plus the
allocation that failed). Ratios are against PyG's TransformerConv (> 1: gattn faster / lighter).

    python benchmarks/large_graphs.py --graphs ogbn-arxiv --repeats 1
    python benchmarks/large_graphs.py --graphs ogbn-products --modes full mini --max-batches 20 --no-warmup
    python benchmarks/large_graphs.py --quick          # a 20,000-node graph, to try it out
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    fmt,
    load_average,
    median_time,
    peak_rss_mb,
    print_table,
    rss_mb,
    run_child,
)

CONVS = ("gattn", "transformer", "gat")
PEER = "transformer"


def _graph(args: dict) -> tuple[object, str]:
    from gattn.datasets.ogbn import SIZES, load_ogbn_arxiv, random_graph

    if args["graph"] == "ogbn-arxiv" and args.get("root"):
        try:
            return load_ogbn_arxiv(args["root"]), "ogbn-arxiv (real)"
        except FileNotFoundError:
            pass
    nodes, edges, features, classes = SIZES[args["graph"]]
    scale = float(args.get("scale", 1.0))
    nodes, edges = int(nodes * scale), int(edges * scale)
    label = f"{args['graph']}-sized random" + (f" x{scale:g}" if scale != 1 else "")
    return random_graph(nodes, edges, features, classes, seed=0), label


def make_graph_file(args: dict) -> dict:
    """Build the graph once (in a child: the parent stays small) and save it for every
    measurement's process."""
    data, label = _graph(args)
    torch.save({"data": data, "label": label}, args["graph_file"])
    return {"graph": label, "nodes": int(data.num_nodes), "edges": int(data.edge_index.size(1))}


def _cap_memory(gib: float | None) -> None:
    """A hard cap on this process's address space: an allocation past it fails with an error
    this process reports, instead of the machine's OOM killer taking some process."""
    if gib:
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _does_not_fit(exc: BaseException, gib: float | None) -> dict | None:
    """The result of a measurement that ran out of its memory cap (None: another error).
    What it needed is at least what it held plus the allocation that failed."""
    text = str(exc)
    if not isinstance(exc, MemoryError) and "allocate" not in text:
        return None
    match = re.search(r"allocate (\d+) bytes", text)
    asked = int(match.group(1)) / 2**30 if match else 0.0
    held = rss_mb() / 1024
    return {"error": [f"does not fit in {gib:g} GiB: needs more than {held + asked:.1f} GiB "
                      f"({held:.1f} GiB held, {asked:.1f} GiB more asked for)"],
            "needs_more_than_gib": held + asked}


def child(args: dict) -> dict:
    _cap_memory(args.get("memory_cap_gb"))
    try:
        return make_graph_file(args) if args.get("make") else _measure(args)
    except (MemoryError, RuntimeError) as exc:
        failed = _does_not_fit(exc, args.get("memory_cap_gb"))
        if failed is None:
            raise
        return failed


def _measure(args: dict) -> dict:
    import torch.nn.functional as F

    from gattn.models.node_gnn import NodeGNN
    from gattn.sampling import hop_counts, neighbor_loader

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    if args.get("graph_file"):
        saved = torch.load(args["graph_file"], weights_only=False)
        data, label = saved["data"], saved["label"]
    else:
        data, label = _graph(args)
    model = NodeGNN(data.num_features, args["hidden"], int(data.y.max()) + 1, num_layers=len(args["fanout"]),
                    conv=args["conv"], heads=args["heads"], checkpoint=args.get("checkpoint", False))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    base = rss_mb()
    _reset_peak()  # the graph's construction peaked above what it keeps: measure from here
    result: dict = {"graph": label, "nodes": int(data.num_nodes), "edges": int(data.edge_index.size(1))}

    def step(out, target):
        optimizer.zero_grad()
        F.cross_entropy(out, target).backward()
        optimizer.step()

    def timed(fn) -> float:
        if args.get("warmup", True):
            return median_time(fn, args["repeats"])
        start = time.perf_counter()  # the first call: no second epoch of a huge graph to warm up
        fn()
        return time.perf_counter() - start

    if args["mode"] == "full":
        def epoch():
            model.train()
            out = model(data.x, data.edge_index)
            step(out[data.train_mask], data.y[data.train_mask])
        result["seconds"] = timed(epoch)
    elif args["mode"] == "mini":
        loader = neighbor_loader(data, args["fanout"], input_nodes=data.train_mask, batch_size=args["batch_size"],
                                 shuffle=True, seed=0)

        def batches(limit=None):
            model.train()
            for n, batch in enumerate(loader):
                if limit is not None and n >= limit:
                    break
                out = model(batch.x, batch.edge_index, *hop_counts(batch, model.num_layers))
                step(out[:batch.batch_size], batch.y[:batch.batch_size])
        batches(limit=3)
        limit = args.get("max_batches")
        limit = limit if limit and limit < len(loader) else None
        start = time.perf_counter()
        batches(limit)
        elapsed = time.perf_counter() - start
        # a fixed number of batches stands for the epoch: their mean time x the epoch's batches
        result["seconds"] = elapsed if limit is None else elapsed / limit * len(loader)
        result["batches"] = len(loader)
        if limit is not None:
            result["timed_batches"] = limit
    elif args["mode"] == "infer_full":
        model.eval()
        with torch.no_grad():
            result["seconds"] = timed(lambda: model(data.x, data.edge_index))
    else:  # infer_layerwise
        model.eval()
        loader = neighbor_loader(data, [-1], batch_size=args["inference_batch_size"])
        result["seconds"] = timed(lambda: model.inference(data.x, loader))
    result["peak_mb"] = _peak_mb() - base
    return result


def _reset_peak() -> None:
    """Reset this process's peak resident memory (Linux: VmHWM, by writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_mb() -> float:
    """Peak resident memory since :func:`_reset_peak` (VmHWM; getrusage's maximum is never reset)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", nargs="+", default=["ogbn-arxiv", "ogbn-products"],
                        choices=["ogbn-arxiv", "ogbn-products"])
    parser.add_argument("--products-scale", type=float, default=1.0,
                        help="share of ogbn-products' nodes and edges (default 1: 2,449,029 nodes, 61,859,140 edges)")
    parser.add_argument("--memory-cap-gb", type=float, default=14.0,
                        help="hard address-space cap of every measuring process (GiB; 0: none): a method that "
                             "needs more fails and is reported as not fitting, never killed by the OOM killer")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="time this many mini-batches (after 3 warm-up ones) and extrapolate to the epoch "
                             "(default: the whole epoch)")
    parser.add_argument("--graph-dir", default=None,
                        help="keep each built graph in this folder as <graph>-x<scale>.pt and reuse it on the "
                             "next run (building ogbn-products' size takes minutes); default: a temporary folder")
    parser.add_argument("--no-warmup", action="store_true",
                        help="full-batch and inference: time the first call (default: the median of --repeats "
                             "after a warm-up call)")
    parser.add_argument("--root", default=None, help="data root holding ogb/ogbn_arxiv (else a random graph)")
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=CONVS)
    parser.add_argument("--modes", nargs="+", default=["full", "mini", "infer_full", "infer_layerwise"],
                        choices=["full", "mini", "infer_full", "infer_layerwise"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--fanout", type=int, nargs="+", default=[10, 5], help="neighbours per hop (= layers)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--inference-batch-size", type=int, default=4096)
    parser.add_argument("--checkpoint", action="store_true",
                        help="activation checkpointing in every layer's training (NodeGNN(checkpoint=True)): "
                             "less memory, one more forward per layer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="one 20,000-node random graph")
    parser.add_argument("--chart", default="benchmarks/large_graphs.png")
    parser.add_argument("--json", default=None, help="write every measurement here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return

    graphs = [("ogbn-arxiv", 20_000 / 169_343)] if args.quick else [
        (g, args.products_scale if g == "ogbn-products" else 1.0) for g in args.graphs]
    results: dict[str, dict] = {}
    folder = tempfile.TemporaryDirectory()
    if args.graph_dir:
        Path(args.graph_dir).mkdir(parents=True, exist_ok=True)
    cap = args.memory_cap_gb or None
    for graph, scale in graphs:
        graph_file = str(Path(args.graph_dir or folder.name) / f"{graph}-x{scale:g}.pt")
        if Path(graph_file).is_file():
            made = {"graph": graph, "reused": graph_file}
        else:
            made = run_child("benchmarks.large_graphs", dict(make=True, graph=graph, scale=scale, root=args.root,
                                                             graph_file=graph_file, memory_cap_gb=cap),
                             timeout=args.timeout)
        print(f"{graph}: {made}", flush=True)
        for mode in args.modes:
            for conv in args.convs:
                spec = dict(graph=graph, scale=scale, root=args.root, conv=conv, mode=mode, hidden=args.hidden,
                            heads=args.heads, fanout=args.fanout, batch_size=args.batch_size,
                            inference_batch_size=args.inference_batch_size, repeats=args.repeats,
                            threads=args.threads, graph_file=graph_file, memory_cap_gb=cap,
                            max_batches=args.max_batches, warmup=not args.no_warmup, checkpoint=args.checkpoint)
                try:
                    out = run_child("benchmarks.large_graphs", spec, timeout=args.timeout) if "error" not in made \
                        else made
                except Exception as exc:  # a timeout: the row says so
                    out = {"error": [f"{type(exc).__name__}"]}
                results[f"{graph}|{mode}|{conv}"] = {**spec, **out}
                print(f"{graph} {mode} {conv}: " + (f"{out['seconds']:.2f} s, +{out['peak_mb']:.0f} MB"
                                                    if "seconds" in out else f"failed: {out['error']}"), flush=True)

    from gattn.sampling import has_pyg_sampler

    sampler = "PyG's NeighborLoader" if has_pyg_sampler() else "gattn's NeighborBatches (no PyG sampling backend)"
    rows, cases, speed, memory = [], [], [], []
    for graph, _ in graphs:
        for mode in args.modes:
            peer = results.get(f"{graph}|{mode}|{PEER}", {})
            for conv in args.convs:
                r = results[f"{graph}|{mode}|{conv}"]
                ok = "seconds" in r and "seconds" in peer
                time_ratio = peer["seconds"] / r["seconds"] if ok else None
                mem_ratio = peer["peak_mb"] / max(r["peak_mb"], 1.0) if ok else None
                note = r["error"][0] if "error" in r else (
                    f"{r['timed_batches']} of {r['batches']} batches timed, x{r['batches'] / r['timed_batches']:.0f}"
                    if "timed_batches" in r else "")
                rows.append([r.get("graph", graph), f"{r.get('nodes', '-')}/{r.get('edges', '-')}", mode, conv,
                             fmt(r.get("seconds"), 2), fmt(r.get("peak_mb"), 0), fmt(time_ratio, 2),
                             fmt(mem_ratio, 2), note])
                if conv != PEER:
                    cases.append(f"{graph.split('-')[1]}\n{mode}\n{conv}")
                    speed.append(time_ratio)
                    memory.append(mem_ratio)
    folder.cleanup()
    print_table("Large graphs: seconds per epoch / inference pass, peak memory (MB above the graph), "
                f"ratios vs PyG TransformerConv (> 1: better); loader {sampler}; fanout {args.fanout}, "
                f"batch {args.batch_size}, "
                f"{args.threads} thread(s), memory cap {cap or 'none'} GiB, "
                + ("activation checkpointing, " if args.checkpoint else "")
                + ("first call timed" if args.no_warmup else f"median of {args.repeats} after a warm-up")
                + f"; load average at the end {load_average():.1f}",
                ["graph", "nodes/edges", "mode", "layer", "s", "MB", "speed x", "memory x", "note"], rows)
    # full-batch vs mini-batch and full-graph vs layer-wise, per layer
    pairs = [("full", "mini"), ("infer_full", "infer_layerwise")]
    rows = []
    for graph, _ in graphs:
        for conv in args.convs:
            for a, b in pairs:
                ra, rb = results.get(f"{graph}|{a}|{conv}", {}), results.get(f"{graph}|{b}|{conv}", {})
                if "seconds" in ra and "seconds" in rb:
                    rows.append([graph, conv, f"{b} vs {a}", fmt(ra["seconds"] / rb["seconds"], 2),
                                 fmt(ra["peak_mb"] / max(rb["peak_mb"], 1.0), 2)])
    if rows:
        print_table("Mini-batch / layer-wise against full graph (> 1: the mini-batch or layer-wise form is "
                    "faster / lighter)", ["graph", "layer", "comparison", "speed x", "memory x"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if cases and args.chart:
        from benchmarks._common import write_ratio_chart

        print("chart:", write_ratio_chart(args.chart, "Large graphs vs PyG TransformerConv", cases,
                                          {"speed": speed, "memory": memory}))


if __name__ == "__main__":
    main()
