"""Large graphs: full-batch vs neighbour-sampled mini-batch training, and full-graph vs
layer-wise inference, for gattn's Graph Transformer layer against PyG's TransformerConv and
GATConv in the same model and loader (:class:`gattn.models.node_gnn.NodeGNN`).

Graphs: ogbn-arxiv's size (169,343 nodes, 1,166,243 edges, 128 features, 40 classes; the real
graph when its raw files are under ``--root``, else a random one) and ogbn-products' size
(2,449,029 nodes, 61,859,140 edges), scaled by ``--products-scale`` (default 1/16: the full size
needs ~1 GB for its edge list alone and far more for full-batch attention, more than a shared
24 GB machine can give; the table says the size used).

Per graph and layer, each in its own process: one training epoch full-batch (forward and
backward over the whole graph, loss on the training nodes) and one mini-batch epoch over the
training nodes (``--fanout`` neighbours per hop, ``--batch-size`` seeds), then inference over
every node full-graph and layer by layer (``--inference-batch-size`` destinations with all
their neighbours). Time: the median over ``--repeats`` (after a warm-up) for full-batch and
inference, one whole epoch for mini-batches (after a warm-up of a few batches). Memory: the
process's peak resident memory above what it held once the graph was built. Ratios are
against PyG's TransformerConv (> 1: gattn faster / lighter). The peak is reset once the graph
is built (Linux ``clear_refs``), so the graph's construction does not hide a smaller peak.

    python benchmarks/large_graphs.py                  # both graphs, the three layers
    python benchmarks/large_graphs.py --quick          # a 20,000-node graph, to try it out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import fmt, median_time, peak_rss_mb, print_table, rss_mb, run_child  # noqa: E402

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


def child(args: dict) -> dict:
    import torch.nn.functional as F

    from gattn.models.node_gnn import NodeGNN
    from gattn.sampling import neighbor_loader

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    data, label = _graph(args)
    model = NodeGNN(data.num_features, args["hidden"], int(data.y.max()) + 1, num_layers=len(args["fanout"]),
                    conv=args["conv"], heads=args["heads"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    base = rss_mb()
    _reset_peak()  # the graph's construction peaked above what it keeps: measure from here
    result: dict = {"graph": label, "nodes": int(data.num_nodes), "edges": int(data.edge_index.size(1))}

    def step(out, target):
        optimizer.zero_grad()
        F.cross_entropy(out, target).backward()
        optimizer.step()

    if args["mode"] == "full":
        def epoch():
            model.train()
            out = model(data.x, data.edge_index)
            step(out[data.train_mask], data.y[data.train_mask])
        result["seconds"] = median_time(epoch, args["repeats"])
    elif args["mode"] == "mini":
        loader = neighbor_loader(data, args["fanout"], input_nodes=data.train_mask, batch_size=args["batch_size"],
                                 shuffle=True, seed=0)

        def batches(limit=None):
            model.train()
            for n, batch in enumerate(loader):
                if limit is not None and n >= limit:
                    break
                out = model(batch.x, batch.edge_index, batch.num_sampled_nodes, batch.num_sampled_edges)
                step(out, batch.y[:batch.batch_size])
        batches(limit=3)
        start = time.perf_counter()
        batches()
        result["seconds"] = time.perf_counter() - start
        result["batches"] = len(loader)
    elif args["mode"] == "infer_full":
        model.eval()
        with torch.no_grad():
            result["seconds"] = median_time(lambda: model(data.x, data.edge_index), args["repeats"])
    else:  # infer_layerwise
        model.eval()
        loader = neighbor_loader(data, [-1], batch_size=args["inference_batch_size"])
        result["seconds"] = median_time(lambda: model.inference(data.x, loader), args["repeats"])
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
    parser.add_argument("--products-scale", type=float, default=1 / 16,
                        help="share of ogbn-products' nodes and edges (default 1/16)")
    parser.add_argument("--root", default=None, help="data root holding ogb/ogbn_arxiv (else a random graph)")
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=CONVS)
    parser.add_argument("--modes", nargs="+", default=["full", "mini", "infer_full", "infer_layerwise"],
                        choices=["full", "mini", "infer_full", "infer_layerwise"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--fanout", type=int, nargs="+", default=[10, 5], help="neighbours per hop (= layers)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--inference-batch-size", type=int, default=4096)
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
    for graph, scale in graphs:
        for mode in args.modes:
            for conv in args.convs:
                spec = dict(graph=graph, scale=scale, root=args.root, conv=conv, mode=mode, hidden=args.hidden,
                            heads=args.heads, fanout=args.fanout, batch_size=args.batch_size,
                            inference_batch_size=args.inference_batch_size, repeats=args.repeats,
                            threads=args.threads)
                try:
                    out = run_child("benchmarks.large_graphs", spec, timeout=args.timeout)
                except Exception as exc:  # a timeout: the row says so
                    out = {"error": [f"{type(exc).__name__}"]}
                results[f"{graph}|{mode}|{conv}"] = {**spec, **out}
                print(f"{graph} {mode} {conv}: " + (f"{out['seconds']:.2f} s, +{out['peak_mb']:.0f} MB"
                                                    if "seconds" in out else f"failed: {out['error']}"), flush=True)

    rows, cases, speed, memory = [], [], [], []
    for graph, _ in graphs:
        for mode in args.modes:
            peer = results.get(f"{graph}|{mode}|{PEER}", {})
            for conv in args.convs:
                r = results[f"{graph}|{mode}|{conv}"]
                ok = "seconds" in r and "seconds" in peer
                time_ratio = peer["seconds"] / r["seconds"] if ok else None
                mem_ratio = peer["peak_mb"] / max(r["peak_mb"], 1.0) if ok else None
                rows.append([r.get("graph", graph), f"{r.get('nodes', '-')}/{r.get('edges', '-')}", mode, conv,
                             fmt(r.get("seconds"), 2), fmt(r.get("peak_mb"), 0), fmt(time_ratio, 2),
                             fmt(mem_ratio, 2), r.get("error", [""])[0] if "error" in r else ""])
                if conv != PEER:
                    cases.append(f"{graph.split('-')[1]}\n{mode}\n{conv}")
                    speed.append(time_ratio)
                    memory.append(mem_ratio)
    print_table("Large graphs: seconds per epoch / inference pass, peak memory (MB above the graph), "
                f"ratios vs PyG TransformerConv (> 1: better); fanout {args.fanout}, batch {args.batch_size}, "
                f"{args.threads} thread(s)",
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
