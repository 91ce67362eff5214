"""Edge attention layers in a training step: gattn's fused kernels vs PyG's layers.

Three layers, each against PyG's own (same sizes, concatenated heads):

* ``transformer``: ``gattn.nn.TransformerConv(root_weight=False)`` (Q, K/V projections,
  multi-head dot-product attention over incoming edges on the fused
  :func:`gattn.kernels.edge_attention`) vs PyG's ``TransformerConv(root_weight=False)``;
  ``reference`` is the same layer on the plain-torch oracle, ``triton`` forces Triton;
* ``gat``: ``gattn.nn.GATConv`` vs ``torch_geometric.nn.GATConv`` (defaults: self-loops);
* ``gatv2``: ``gattn.nn.GATv2Conv`` vs ``torch_geometric.nn.GATv2Conv``.

What a user sees: the forward (no grad) and a whole **training step** (forward, a loss,
backward, an Adam step), medians over repeats, with ``--threads`` torch and numba threads,
``--batch full`` (one graph, its CSR built once and cached) or ``mini`` (a new
``edge_index`` tensor every step, as a mini-batch loader gives: the CSR is rebuilt each
step), with no load of ours or under ``--load busy`` (busy-loop processes the benchmark
starts itself for the time of each measurement); the machine's load average is printed with
every row. Graphs: ``random`` (uniform), ``powerlaw`` (hub destinations), ``sbm`` (a
stochastic block model: 100 communities of 500 nodes, 90 % of the edges inside a community,
node ids shuffled), ``knn`` (a 3-D point cloud, each point's 16 nearest neighbours: real
locality), ``arxiv`` (a random graph of ogbn-arxiv's size, 169k nodes and 1.17M edges) and
``cora`` (the Planetoid citation graph from ``--data``; the row is skipped, with
the reason printed, when the files are absent).

bf16 K/V: the method ``gattn-bf16kv`` (``--methods gattn,gattn-bf16kv,pyg``) is gattn's
layer with ``kv_dtype=torch.bfloat16``; its row is followed by the relative error of its
output against float32 K/V on the same input.

Node reordering: ``gattn`` is the layer as a user gets it, with ``reorder="auto"`` (reverse
Cuthill-McKee once a graph comes back, where it brings locality; never for a mini-batch's
fresh ``edge_index``); ``gattn-plain`` is the same layer with ``reorder=None`` (always the
caller's order), ``gattn-rcm`` and ``gattn-metis`` with ``reorder="rcm"`` / ``"metis"`` (the
ordering computed once, in the warm-up, and cached like the CSR). ``--reorder`` adds
the last three to the default methods (full batch only) and prints each gattn method's first
two forward calls: the first builds the CSR, the second is where ``"auto"`` decides.

Every (graph, layer, method, setting) runs in a fresh
process, so on CPU its peak RSS is its own; on CUDA peak memory is
torch.cuda.max_memory_allocated above the inputs. The table gives ratios against PyG (higher
is better) and a PNG chart of them is written (``--chart``).

    python benchmarks/edge_attention.py --demo      # one small row, under a minute
    python benchmarks/edge_attention.py             # CPU: every graph, 1 and 2 threads, idle and busy
    python benchmarks/edge_attention.py --graphs random --threads 1 --load none,busy --batch full,mini
    python benchmarks/edge_attention.py --graphs sbm,knn,cora,powerlaw --reorder --batch full --load none
    python benchmarks/edge_attention.py --device cuda
    python benchmarks/edge_attention.py --profile --graphs random --threads 1   # what bounds a training step
    python benchmarks/edge_attention.py --graphs random --layers transformer,gat --threads 1 --load none \
        --dgl-python benchmarks/peers/.venv-dgl/bin/python      # DGL rows beside PyG's

Each case's graph (and its mini-batch edge lists) is written once to a file that every
method's process reads, DGL's too (``--dgl-python``: DGL's sparse ``bsddmm -> softmax ->
bspmm`` attention for ``transformer``, ``dgl.nn.GATConv`` / ``GATv2Conv`` for ``gat`` /
``gatv2``, CPU float32 only; see ``benchmarks/peers/dgl_attention.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (
    background_load,
    cuda_sync,
    fmt,
    huge_pages,
    load_average,
    machine,
    median_time,
    peak_rss_mb,
    print_table,
    rss_mb,
    run_child,
    set_threads,
    write_ratio_chart,
)
from benchmarks.peers import dgl_attention
from benchmarks.peers.dgl_attention import load_graph, save_graph

LAYERS = ("transformer", "gat", "gatv2")

ARXIV_NODES, ARXIV_EDGES = 169_343, 1_166_243


KINDS = ("random", "powerlaw", "sbm", "knn", "cora")  # what make_graph builds
GRAPHS = (*KINDS, "arxiv")
CUDA_GRAPHS = ("random", "powerlaw", "arxiv")


def graph_kinds(device: str) -> tuple[str, ...]:
    """The graphs `--graphs` takes on `device` (all of them by default)."""
    return GRAPHS if device == "cpu" else CUDA_GRAPHS
#: Nodes per community of the 'sbm' graph, and the share of edges inside a community.
SBM_BLOCK, SBM_INSIDE = 500, 0.9
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def make_graph(kind: str, num_nodes: int, num_edges: int, seed: int = 0, data: str = DEFAULT_DATA
               ) -> tuple[torch.Tensor, int]:
    """(edge_index [2, E], number of nodes) of a benchmark graph.

    'random': uniform sources and destinations; 'powerlaw': destinations drawn with
    probability ~ rank^-0.8 (the top node gets ~3% of all edges), sources uniform; 'sbm': a
    stochastic block model sampled edge by edge (destinations uniform, each source drawn from
    the destination's community of SBM_BLOCK nodes with probability SBM_INSIDE, else uniform;
    node ids then shuffled, so communities are not contiguous id ranges); 'knn':
    `num_nodes` uniform points in the unit cube, each receiving edges from its
    `num_edges // num_nodes` nearest neighbours (node ids in random order, as a point cloud
    comes); 'cora': the Planetoid Cora graph read from `data`/planetoid (sizes ignored)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "cora":
        return _cora(data), 2708
    if kind == "knn":
        from scipy.spatial import cKDTree

        degree = max(1, num_edges // num_nodes)
        points = torch.rand(num_nodes, 3, generator=gen, dtype=torch.float64).numpy()
        _, neighbours = cKDTree(points).query(points, k=degree + 1)
        src = torch.from_numpy(neighbours[:, 1:].reshape(-1)).long()
        dst = torch.arange(num_nodes).repeat_interleave(degree)
        return torch.stack([src, dst]), num_nodes
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    if kind == "sbm":
        dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
        block_start = dst - dst % SBM_BLOCK
        inside = torch.randint(0, SBM_BLOCK, (num_edges,), generator=gen)
        inner = (block_start + inside).clamp(max=num_nodes - 1)
        src = torch.where(torch.rand(num_edges, generator=gen) < SBM_INSIDE, inner, src)
        relabel = torch.randperm(num_nodes, generator=gen)
        return relabel[torch.stack([src, dst])], num_nodes
    if kind == "random":
        dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    elif kind == "powerlaw":
        weights = torch.arange(1, num_nodes + 1, dtype=torch.float64).pow(-0.8)
        dst = torch.multinomial(weights, num_edges, replacement=True, generator=gen)
        dst = torch.randperm(num_nodes, generator=gen)[dst]
    else:
        raise ValueError(f"unknown graph kind {kind!r}, expected one of {KINDS}")
    return torch.stack([src, dst]), num_nodes


def _cora(data: str) -> torch.Tensor:
    """Cora's edge_index, read by PyG's Planetoid from `data`/planetoid/Cora/raw (processed
    files go to a temporary folder, never into the shared data)."""
    import tempfile

    from torch_geometric.datasets import Planetoid

    raw = os.path.abspath(os.path.join(data, "planetoid", "Cora", "raw"))
    if not os.path.isdir(raw):
        raise FileNotFoundError(f"Cora's raw files (ind.cora.*) not found: searched {raw} (set --data)")
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "Cora"))
        os.symlink(raw, os.path.join(root, "Cora", "raw"))
        return Planetoid(root, "Cora")[0].edge_index


def mini_batches(kind: str, num_nodes: int, num_edges: int, count: int, data: str) -> list[torch.Tensor]:
    """`count` distinct edge_index tensors, one per training step: for random and power-law
    graphs fresh graphs of the same law, else the graph's edges in a fresh random order (the
    same structure, a new tensor: what a loader hands over every step)."""
    if kind in ("random", "powerlaw"):
        return [make_graph(kind, num_nodes, num_edges, seed, data)[0] for seed in range(1, count + 1)]
    edge_index = make_graph(kind, num_nodes, num_edges, 0, data)[0]
    gen = torch.Generator().manual_seed(1)
    return [edge_index[:, torch.randperm(edge_index.size(1), generator=gen)] for _ in range(count)]


#: Methods: gattn (backend by device, ``reorder="auto"``), gattn in the caller's order, its
#: node-reordered forms, gattn with bf16 K/V storage, the reference, triton, PyG.
METHODS = ("gattn", "gattn-plain", "gattn-rcm", "gattn-metis", "gattn-bf16kv", "reference", "triton", "pyg")


def case_input(kind: str, num_nodes: int, num_edges: int, repeats: int, mini: bool, data: str = DEFAULT_DATA
               ) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    """(edge_index, nodes, mini-batch edge lists) of one case: with `mini`, one edge list for
    each timed call and warm-up of the forward and the training step, else none."""
    edge_index, nodes = make_graph(kind, num_nodes, num_edges, 0, data)
    steps = 2 * (repeats + 1) + 2
    return edge_index, nodes, mini_batches(kind, nodes, num_edges, steps, data) if mini else []


def build(method: str, channels: int, heads: int, dim: int, layer: str = "transformer") -> nn.Module:
    """The benchmarked module: `layer` as implemented by `method` (one of METHODS)."""
    backend = {"reference": "reference", "triton": "triton"}.get(method)
    name = {"transformer": "TransformerConv", "gat": "GATConv", "gatv2": "GATv2Conv"}[layer]
    options = dict(root_weight=False) if layer == "transformer" else {}
    if method == "pyg":
        import torch_geometric.nn as module

        return getattr(module, name)(channels, dim, heads=heads, **options)
    import gattn.nn as module

    if method == "gattn-bf16kv":
        options["kv_dtype"] = torch.bfloat16
    elif method == "gattn-plain":
        options["reorder"] = None
    elif method.startswith("gattn-"):
        options["reorder"] = method.split("-", 1)[1]
    return getattr(module, name)(channels, dim, heads=heads, backend=backend, **options)


class _Setup(NamedTuple):
    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    next_graph: Callable[[], torch.Tensor]
    sync: Callable[[], None]
    device: torch.device
    nodes: int
    edges: int


def _setup(spec: dict) -> _Setup:
    """Threads, graph(s), input, model and Adam of one benchmarked setting, in this process."""
    torch.manual_seed(0)
    threads = spec.get("threads")
    if threads:
        set_threads(threads, numba_too=spec["method"] != "pyg")
    device = torch.device(spec["device"])
    heads, dim = spec["heads"], spec["dim"]
    channels = heads * dim
    mini = spec.get("batch", "full") == "mini"
    if spec.get("graph_file"):  # the case's input, written once for every method (DGL's too)
        saved = load_graph(spec["graph_file"])
        edge_index, nodes, batches = saved["edge_index"], saved["num_nodes"], saved["batches"] if mini else []
    else:
        edge_index, nodes, batches = case_input(spec["graph"], spec["nodes"], spec["edges"], spec["repeats"],
                                                mini, spec.get("data", DEFAULT_DATA))
    edge_index = edge_index.to(device)
    batches = [e.to(device) for e in batches]
    position = [0]

    def next_graph() -> torch.Tensor:
        if not mini:
            return edge_index
        position[0] += 1
        # as a loader hands it over: once its step is done nothing holds the batch any more, so
        # what gattn derived from it (CSR, self-loops; cached while the tensor lives) goes too
        graph, batches[position[0] - 1] = batches[position[0] - 1], None
        return graph

    dtype = getattr(torch, spec.get("dtype", "float32"))
    x = torch.randn(nodes, channels, device=device, dtype=dtype)
    model = build(spec["method"], channels, heads, dim, spec.get("layer", "transformer")).to(device, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = cuda_sync if device.type == "cuda" else (lambda: None)
    return _Setup(model, optimizer, x, next_graph, sync, device, nodes, int(edge_index.size(1)))


def _train_step(setup: _Setup) -> None:
    setup.optimizer.zero_grad(set_to_none=True)
    setup.model(setup.x, setup.next_graph()).square().mean().backward()
    setup.optimizer.step()


def measure(spec: dict) -> dict:
    """Time (and memory of) one method on one graph in one setting, in this process."""
    setup = _setup(spec)
    model, x, next_graph, sync, device = setup.model, setup.x, setup.next_graph, setup.sync, setup.device
    base_rss = rss_mb()

    def forward():
        with torch.no_grad():
            model(x, next_graph())

    def train_step():
        _train_step(setup)

    result = {"load": load_average(), "edges": setup.edges, "nodes": setup.nodes}
    if spec.get("first_calls"):  # one-off costs: the CSR build, reorder="auto"'s decision
        for key in ("first_fwd_s", "second_fwd_s"):
            start = time.perf_counter()
            forward()
            sync()
            result[key] = time.perf_counter() - start
        if spec["method"] == "gattn" and spec.get("batch", "full") == "full" and device.type == "cpu":
            from gattn.kernels.reorder import auto_ordering

            row_bytes = 2 * spec["heads"] * spec["dim"] * x.element_size()  # the packed K|V row
            result["auto_ordering"] = auto_ordering(next_graph(), setup.nodes, row_bytes) or "none"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        train_step()  # warm-up: kernel compilation, CSR build
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step()
        sync()
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    result["fwd_s"] = median_time(forward, spec["repeats"], sync)
    result["step_s"] = median_time(train_step, spec["repeats"], sync)
    if device.type == "cpu":
        result["peak_mb"] = peak_rss_mb()
        result["above_inputs_mb"] = peak_rss_mb() - base_rss
    if spec["method"] == "gattn-bf16kv":  # what the opt-in costs in accuracy, on this input
        with torch.no_grad():
            stored = model(x, next_graph())
            model.kv_dtype = None
            exact = model(x, next_graph())
            model.kv_dtype = torch.bfloat16
        result["kv_bf16_rel_error"] = float((stored - exact).float().norm() / exact.float().norm())
    result["load"] = max(result["load"], load_average())
    return result


#: What bounds a training step: profiler events (inclusive CPU time) summed per part.
PROFILE_PARTS = {
    "attention kernels (fused forward + backward)": ("FusedEdgeAttention", "FusedEdgeAttentionBackward"),
    # gattn's pooled projections (gattn.kernels._workspace.linear) appear as _Linear / _LinearBackward
    "projections (Q, K|V matmuls, forward + backward)": ("aten::linear", "AddmmBackward0", "MmBackward0", "_Linear",
                                                         "_LinearBackward"),
    "K|V gradient assembly (split_kv backward)": ("_SplitKVBackward", "SliceBackward0"),
    "node reordering permutations": ("_PermuteRows", "_PermuteRowsBackward"),
    "optimizer (Adam step + zero_grad)": ("Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad"),
    # the benchmark's own loss, the same for every method: at ogbn-arxiv size mostly page faults
    # (each of its [N, H*D] temporaries is a fresh allocation, faulted in page by page)
    "the loss (square().mean(), forward + backward)": ("aten::square", "aten::mean", "PowBackward0", "MeanBackward0"),
}


def profile_step(spec: dict) -> dict:
    """torch.profiler over `spec["repeats"]` training steps (after two warm-up steps): seconds
    per step of each part of :data:`PROFILE_PARTS`, the rest, and the top ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    setup = _setup(spec)
    for _ in range(2):
        _train_step(setup)
    setup.sync()
    steps = spec["repeats"]
    cuda = setup.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(steps):
            _train_step(setup)
        setup.sync()
        wall = (time.perf_counter() - start) / steps
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    averages = {event.key: event for event in prof.key_averages()}
    extra = {}
    if cuda:  # the GPU's own time: kernels, copies and fills, by device time
        on_gpu = [(key, getattr(event, "self_device_time_total", 0) / 1e6 / steps) for key, event in averages.items()]
        on_gpu = sorted([item for item in on_gpu if item[1] > 0], key=lambda item: item[1], reverse=True)
        extra = {"gpu_s": sum(sec for _, sec in on_gpu), "top_gpu": on_gpu[:12]}
    parts = {part: sum(averages[name].cpu_time_total for name in names if name in averages) / 1e6 / steps
             for part, names in PROFILE_PARTS.items()}
    parts["everything else (autograd glue, casts, allocation)"] = wall - sum(parts.values())
    top = sorted(averages.values(), key=lambda event: event.self_cpu_time_total, reverse=True)[:10]
    return {"step_s": wall, "parts": parts, "load": load_average(), "page_faults": faults, **extra,
            "top_self": [(event.key, event.self_cpu_time_total / 1e6 / steps) for event in top]}


def print_profile(spec: dict, result: dict) -> None:
    print(f"profile: {spec['method']} {spec['graph']} N={spec['nodes']:,} E={spec['edges']:,} H={spec['heads']} "
          f"D={spec['dim']}, {spec['threads']} thread(s), full batch, {spec['repeats']} steps, "
          f"load average {result['load']:.1f}")
    print_table(f"Training step: {result['step_s']:.3f} s (wall, under the profiler); "
                f"{result['page_faults']:,.0f} page faults per step",
                ["part", "s per step", "share"],
                [[part, fmt(sec, 3), f"{100 * sec / result['step_s']:.0f}%"] for part, sec in result["parts"].items()])
    print_table("Top ops by self CPU time", ["op", "s per step"], [[k, fmt(v, 3)] for k, v in result["top_self"]])
    if "gpu_s" in result:
        print_table(f"GPU time: {result['gpu_s'] * 1e3:.3f} ms per step of {result['step_s'] * 1e3:.3f} ms wall "
                    f"({100 * result['gpu_s'] / result['step_s']:.0f}% busy); top kernels by device time",
                    ["kernel", "ms per step"], [[k[:90], fmt(v * 1e3, 3)] for k, v in result["top_gpu"]])


def benchmark_cases(device: str, quick: bool = False, graphs: tuple[str, ...] | None = None,
                    shapes: tuple[tuple[int, int], ...] = ((4, 32), (8, 64))) -> list[tuple[str, int, int, int, int]]:
    """(graph kind, nodes, edges, heads, dim) of every benchmarked case; `graphs` picks from
    GRAPHS on CPU, from CUDA_GRAPHS on CUDA (arxiv: a random graph of ogbn-arxiv's size, its
    kind 'random'), and on CUDA `shapes` gives the (heads, dim) of each."""
    graphs = graphs or graph_kinds(device)
    if device == "cpu":
        if quick:
            return [("random", 5_000, 100_000, 4, 32)]
        # arxiv: a random graph of ogbn-arxiv's size (its K|V rows, 173 MB, far beyond the caches)
        sizes = {"random": ("random", 50_000, 1_000_000), "powerlaw": ("powerlaw", 50_000, 1_000_000),
                 "sbm": ("sbm", 50_000, 1_000_000), "knn": ("knn", 50_000, 800_000), "cora": ("cora", 2708, 10_556),
                 "arxiv": ("random", ARXIV_NODES, ARXIV_EDGES)}
        return [(*sizes[kind], 4, 32) for kind in graphs]
    sizes = {"random": ("random", 50_000, 1_000_000), "powerlaw": ("powerlaw", 50_000, 1_000_000),
             "arxiv": ("random", ARXIV_NODES, ARXIV_EDGES)}
    # GPU: the random and power-law 1M-edge graphs and an ogbn-arxiv-sized graph
    cases = [(*sizes[kind], heads, dim) for heads, dim in shapes for kind in sizes if kind in graphs]
    return cases


def warm_numba_cache() -> None:
    """Compile (or load) the numba kernels once, so child processes only load the cache."""
    edge_index, _ = make_graph("random", 64, 256)
    for layer in LAYERS:
        x = torch.randn(64, 8, requires_grad=True)
        build("gattn", 8, 2, 4, layer)(x, edge_index).sum().backward()


def default_methods(layer: str, device: str) -> list[str]:
    """On CUDA the reference is timed too (the tests' oracle); on CPU gattn against PyG."""
    return ["gattn", "reference", "pyg"] if layer == "transformer" and device == "cuda" else ["gattn", "pyg"]


def reordered_methods() -> list[str]:
    """gattn-plain, gattn-rcm, and gattn-metis when pymetis is installed (else said once, on stderr)."""
    from gattn.kernels.reorder import metis_available

    if metis_available():
        return ["gattn-plain", "gattn-rcm", "gattn-metis"]
    print("gattn-metis not timed: pymetis is not installed (pip install pymetis)", file=sys.stderr)
    return ["gattn-plain", "gattn-rcm"]


def csr_build_cost(nodes: int, edges: int, repeats: int = 5) -> dict[str, float]:
    """Seconds of: the structure cache's content check (every call), a CSR + CSC build by
    gattn's counting sort (once per graph, or every mini-batch step), and the same build by
    torch's stable argsort (what it replaced)."""
    from gattn.kernels import CSR, ptr_from_index
    from gattn.kernels._cache import checksum

    edge_index, _ = make_graph("random", nodes, edges)

    def argsort_build() -> None:
        src, dst = edge_index
        perm = torch.argsort(dst, stable=True)
        col = src[perm]
        ptr_from_index(dst[perm], nodes)
        ptr_from_index(col[torch.argsort(col, stable=True)], nodes)

    return {
        "check": median_time(lambda: checksum(edge_index), repeats),
        "counting": median_time(lambda: CSR(edge_index, nodes, nodes).csc(), repeats),
        "argsort": median_time(argsort_build, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--demo", action="store_true",
                        help="one small row (random N=5k/E=100k, transformer, 1 thread, full batch): under a minute")
    parser.add_argument("--quick", action="store_true", help="the small random graph only, every setting asked")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, from {METHODS} (default: gattn,pyg; on CUDA also reference "
                             "for the transformer layer; --reorder adds gattn-rcm and gattn-metis)")
    parser.add_argument("--reorder", action="store_true",
                        help="also time gattn with node reordering (gattn-rcm; gattn-metis when pymetis is installed)")
    parser.add_argument("--layers", default="transformer", help=f"comma-separated, from {LAYERS}")
    parser.add_argument("--graphs", default=None,
                        help=f"comma-separated graphs: on CPU from {GRAPHS} (default all), on CUDA from "
                             f"{CUDA_GRAPHS} (default all)")
    parser.add_argument("--shapes", default="4x32,8x64", help="CUDA: heads x dim of each case, comma-separated")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (CPU)")
    parser.add_argument("--batch", default="full,mini",
                        help="full (one cached graph), mini (a new edge_index every step), or both")
    parser.add_argument("--load", default="none,busy",
                        help="none (no load of ours), busy (--load-procs busy-loop processes), or both")
    parser.add_argument("--load-procs", type=int, default=2, help="busy-loop processes for --load busy")
    parser.add_argument("--dtype", default="float32", help="comma-separated: float32, bfloat16 (layer and input)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder holding planetoid/Cora/raw (the cora graph)")
    parser.add_argument("--chart", default="runs/edge_attention.png", help="PNG chart of the ratios ('' for none)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: torch.profiler breakdown of the full-batch training step of the "
                             "first method (default gattn) on the first graph (random N=50k/E=1M), first thread count")
    parser.add_argument("--dgl-python", default=None,
                        help="the DGL environment's python (benchmarks/peers/.venv-dgl/bin/python, made by "
                             "benchmarks/peers/make_dgl_env.sh): adds DGL rows (CPU, float32; transformer: DGL's "
                             "sparse bsddmm -> softmax -> bspmm, gat/gatv2: dgl.nn.GATConv/GATv2Conv) and ratios "
                             "against them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(profile_step(spec) if spec.get("profile") else measure(spec)))
        return

    layers = args.layers.split(",")
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        parser.error(f"--layers: unknown {unknown}, expected some of {LAYERS}")
    known = graph_kinds(args.device)
    graphs = tuple(args.graphs.split(",")) if args.graphs else known
    if set(graphs) - set(known):
        parser.error(f"--graphs: unknown {sorted(set(graphs) - set(known))}, expected some of {known}")
    try:
        shapes = tuple((int(h), int(d)) for h, d in (shape.split("x") for shape in args.shapes.split(",")))
    except ValueError:
        parser.error(f"--shapes: expected heads x dim pairs such as 4x32,8x64, got {args.shapes!r}")
    methods_asked = args.methods.split(",") if args.methods else None
    if methods_asked and set(methods_asked) - set(METHODS):
        parser.error(f"--methods: unknown {sorted(set(methods_asked) - set(METHODS))}, expected some of {METHODS}")
    if args.demo:
        args.quick, args.threads, args.batch, args.load, layers = True, "1", "full", "none", ["transformer"]
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [None]
    batches, loads, dtypes = args.batch.split(","), args.load.split(","), args.dtype.split(",")
    if set(batches) - {"full", "mini"} or set(loads) - {"none", "busy"} or set(dtypes) - {"float32", "bfloat16"}:
        parser.error("--batch takes full,mini, --load none,busy and --dtype float32,bfloat16")
    if args.dgl_python is not None:
        if args.device != "cpu":
            parser.error("--dgl-python: the DGL rows run on CPU only")
        if not dgl_attention.available(args.dgl_python):
            parser.error(f"--dgl-python: no interpreter at {args.dgl_python} "
                         "(make it: bash benchmarks/peers/make_dgl_env.sh)")
    cases = benchmark_cases(args.device, args.quick, graphs, shapes)
    if args.profile:
        graph, nodes, edges, heads, dim = cases[0]
        if args.device == "cpu":  # the numba kernels: compiled once here, loaded by the child
            warm_numba_cache()
        spec = dict(device=args.device, method=(methods_asked or ["gattn"])[0], layer=layers[0], graph=graph,
                    nodes=nodes, edges=edges, heads=heads, dim=dim, repeats=args.repeats or 3, threads=threads[0],
                    batch="full", data=args.data, dtype=dtypes[0], profile=True)
        result = run_child("benchmarks.edge_attention", spec)
        if "error" in result:
            raise SystemExit(f"profile failed: {result['error']}")
        print_profile(spec, result)
        return
    if args.device == "cpu":
        repeats = args.repeats or 3
        warm_numba_cache()
        nodes, edges = max((case[1], case[2]) for case in cases)
        cost = csr_build_cost(nodes, edges, 1 if args.demo else 5)
        print(f"CSR + CSC build, E={edges:,}: counting sort {cost['counting'] * 1e3:.0f} ms vs stable argsort "
              f"{cost['argsort'] * 1e3:.0f} ms ({cost['argsort'] / cost['counting']:.1f}x); cache content check "
              f"{cost['check'] * 1e3:.1f} ms per call; load average {load_average():.1f}")
        print(f"machine: {machine()}; OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'not set (spinning)')}; "
              f"{huge_pages()}")
    else:
        repeats = args.repeats or 10

    peers = [("PyG", "pyg")] + ([("DGL", "dgl")] if args.dgl_python else [])
    rows, records, chart_cases = [], [], []
    chart_bars: list[dict[str, float | None]] = []  # per case: bar name -> ratio
    folder = tempfile.TemporaryDirectory()
    graph_files: dict[tuple, str] = {}

    def graph_file(graph: str, nodes: int, edges: int, batch: str) -> str:
        """The case's input in a file that every method's process reads (gattn's, PyG's, DGL's)."""
        key = (graph, nodes, edges, batch)
        if key not in graph_files:
            graph_files[key] = os.path.join(folder.name, f"graph{len(graph_files)}.pt")
            save_graph(graph_files[key], *case_input(graph, nodes, edges, repeats, batch == "mini", args.data))
        return graph_files[key]

    for graph, nodes, edges, heads, dim in cases:
        if graph == "cora":
            try:
                _cora(args.data)
            except FileNotFoundError as missing:
                print(f"skipping the cora rows: {missing}", file=sys.stderr)
                continue
        for layer in layers:
            layer_methods = methods_asked or default_methods(layer, args.device)
            if args.reorder:
                layer_methods = [m for m in layer_methods if m != "pyg"] + reordered_methods() + ["pyg"]
            for thread_count in threads:
                for load, batch, dtype in itertools.product(loads, batches, dtypes):
                    # a reordering is per graph: with a new edge_index every step it is not timed
                    methods = [m for m in layer_methods if batch == "full" or not m.startswith("gattn-")]
                    with_dgl = args.dgl_python and dtype == "float32" and layer in dgl_attention.LAYERS
                    results = {}
                    for method in methods + (["dgl"] if with_dgl else []):
                        spec = dict(device=args.device, method=method, layer=layer, graph=graph, nodes=nodes,
                                    edges=edges, heads=heads, dim=dim, repeats=repeats, threads=thread_count,
                                    batch=batch, data=args.data, dtype=dtype,
                                    graph_file=graph_file(graph, nodes, edges, batch),
                                    first_calls=args.reorder and method.startswith("gattn"))
                        with background_load(args.load_procs if load == "busy" else 0):
                            if method == "dgl":
                                results[method] = dgl_attention.measure_dgl(spec, args.dgl_python)
                            else:
                                results[method] = run_child("benchmarks.edge_attention", spec)
                        if "error" in results[method]:
                            print(f"{layer} {graph} {method}: failed: {results[method]['error']}", file=sys.stderr)
                    size = results.get(methods[0], {})
                    case = (f"{graph} N={size.get('nodes', nodes):,} E={size.get('edges', edges):,} "
                            f"H={heads} D={dim}")
                    setting = f"{thread_count or '-'} thr, {load}, {batch}"
                    setting += "" if dtype == "float32" else f", {dtype}"
                    for method, res in results.items():
                        records.append(dict(layer=layer, case=case, threads=thread_count, background=load, batch=batch,
                                            dtype=dtype, method=method, **res))
                        if "error" in res:
                            rows.append([layer, case, setting, method] + ["failed"] * (5 + 3 * len(peers)))
                            continue

                        def ratio(key, peer, res=res, method=method, results=results):
                            other = results.get(peer, {}) if peer != method else {}
                            return other[key] / res[key] if key in other and res.get(key) else None

                        rows.append([
                            layer, case, setting, method, fmt(res["load"], 1),
                            fmt(res["fwd_s"], 4), fmt(res["step_s"], 4), fmt(res["peak_mb"], 0),
                            fmt(res.get("above_inputs_mb"), 0),
                        ] + [fmt(ratio(key, peer), 2) for _, peer in peers for key in ("fwd_s", "step_s", "peak_mb")])
                        print("  ".join(rows[-1]), flush=True)  # as measured: a long run shows its progress
                        if "second_fwd_s" in res:
                            where = (f" (reorder='auto' decides there: {res['auto_ordering']})"
                                     if "auto_ordering" in res else "")
                            print(f"    {method}: first forward {res['first_fwd_s']:.3f} s (the CSR build), second "
                                  f"{res['second_fwd_s']:.3f} s{where}, then {res['fwd_s']:.3f} s", flush=True)
                        if "kv_bf16_rel_error" in res:
                            print(f"    {method}: relative error of the layer output against float32 K/V "
                                  f"(Frobenius norm): {res['kv_bf16_rel_error']:.2e}", flush=True)
                    chart_cases.append(f"{layer} {graph}\n{setting}")
                    bars: dict[str, float | None] = {}
                    for method in methods:
                        res = results[method]
                        if method == "pyg" or "error" in res:
                            continue
                        for name, peer_method in peers:
                            other = results.get(peer_method, {})
                            for label, key in (("train step", "step_s"), ("forward", "fwd_s"), ("memory", "peak_mb")):
                                if key == "peak_mb" and method != methods[0]:
                                    continue  # one memory bar per case: a reordering adds O(N) only
                                ratio = other[key] / res[key] if key in other and res.get(key) else None
                                bars[f"{label} vs {name} ({method})"] = ratio
                    chart_bars.append(bars)
    folder.cleanup()
    memory = "peak RSS MB (process)" if args.device == "cpu" else "peak CUDA MB (above inputs)"
    names = " and ".join(name for name, _ in peers)
    print_table(
        f"Edge attention layers, {args.device}, median of {repeats}; ratios = the peer's ({names}) time or memory / "
        "the method's (higher is better); train step = forward + loss + backward + Adam; memory x compares the first "
        "memory column; load = the machine's 1-minute load average during the run; DGL: "
        "transformer = sparse bsddmm -> softmax -> bspmm, gat/gatv2 = dgl.nn.GATConv/GATv2Conv",
        ["layer", "graph", "threads, load, batch", "method", "load", "fwd s", "train step s", memory,
         "RSS above inputs MB"] + [f"{what} x {name}" for name, _ in peers for what in ("fwd", "step", "memory")],
        rows,
    )
    bar_names = list(dict.fromkeys(name for bars in chart_bars for name in bars))
    chart = {name: [bars.get(name) for bars in chart_bars] for name in bar_names}
    if args.chart and chart_cases:
        os.makedirs(os.path.dirname(args.chart) or ".", exist_ok=True)
        path = write_ratio_chart(args.chart, f"gattn vs {names}: edge attention layers in a training step "
                                 f"({args.device})", chart_cases, chart)
        print(f"chart: {path}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": args.device, "machine": machine(), "huge_pages": huge_pages(), "repeats": repeats,
                       "rows": records}, out, indent=1)


if __name__ == "__main__":
    main()
