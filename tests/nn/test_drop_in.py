"""gattn.nn.TransformerConv / GATConv / GATv2Conv against PyG's layers with the same weights:
outputs, attention weights and gradients over PyG's option grid, the graph formats PyG
accepts, lazy sizes, hooks, the explainer path, dropout."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.edge_index import EdgeIndex

import gattn.nn as gattn_nn

N_SRC, N_DST, E = 9, 7, 30


def _graph(bipartite: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    num_dst = N_DST if bipartite else N_SRC
    src = torch.randint(0, N_SRC, (E,), generator=gen)
    dst = torch.randint(0, num_dst - 1, (E,), generator=gen)  # the last destination: no edge
    if not bipartite:
        src[:3] = dst[:3]  # self-loops, which GAT layers replace
    src[-1], dst[-1] = src[0], dst[0]  # a duplicate edge
    edge_index = torch.stack([src, dst])
    x_src = torch.randn(N_SRC, 5, generator=gen, dtype=torch.float64)
    x_dst = torch.randn(num_dst, 4, generator=gen, dtype=torch.float64)
    edge_attr = torch.randn(E, 3, generator=gen, dtype=torch.float64)
    x = (x_src, x_dst) if bipartite else x_src
    return x, edge_index, edge_attr


def _pair(name: str, in_channels, **kwargs):
    """(gattn layer, PyG layer) with identical weights, in float64."""
    torch.manual_seed(0)
    theirs = getattr(pyg_nn, name)(in_channels, 4, **kwargs).double()
    ours = getattr(gattn_nn, name)(in_channels, 4, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())  # same parameter names: state dicts interchange
    with torch.no_grad():  # non-zero biases and attention vectors everywhere
        for (_, mine), (_, peer) in zip(ours.named_parameters(), theirs.named_parameters()):
            noise = torch.randn_like(mine) * 0.3
            mine.add_(noise)
            peer.add_(noise)
    return ours, theirs


def _run(layer, x, edge_index, edge_attr, **kw):
    """Output, attention (or None) and the gradients of a loss on both."""
    xs = [None if t is None else t.detach().clone().requires_grad_() for t in (x if isinstance(x, tuple) else (x,))]
    inputs = tuple(xs) if isinstance(x, tuple) else xs[0]
    xs = [t for t in xs if t is not None]
    attr = None if edge_attr is None else edge_attr.detach().clone().requires_grad_()
    result = layer(inputs, edge_index, attr, return_attention_weights=True, **kw)
    out, (returned_index, alpha) = result
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
    loss = loss + (alpha * torch.linspace(0, 1, alpha.numel(), dtype=alpha.dtype).view_as(alpha)).sum()
    leaves = [*xs, *([attr] if attr is not None else []), *layer.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, returned_index, alpha, grads


def _compare(ours, theirs, x, edge_index, edge_attr, **kw):
    got, want = _run(ours, x, edge_index, edge_attr, **kw), _run(theirs, x, edge_index, edge_attr, **kw)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(torch.as_tensor(got[1]), torch.as_tensor(want[1]))
    torch.testing.assert_close(got[2], want[2])
    for n, (g, w) in enumerate(zip(got[3], want[3])):
        if w is None:
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g, w, msg=lambda m, n=n: f"gradient {n}: {m}")
    return got


GRID = list(itertools.product([1, 3], [True, False], [None, 3], [False, True]))


@pytest.mark.parametrize("heads, concat, edge_dim, bipartite", GRID)
@pytest.mark.parametrize("variant", [{}, {"beta": True}, {"root_weight": False}, {"bias": False}])
def test_transformer_conv_equals_pyg(heads, concat, edge_dim, bipartite, variant):
    x, edge_index, edge_attr = _graph(bipartite)
    ours, theirs = _pair("TransformerConv", (5, 4) if bipartite else 5, heads=heads, concat=concat,
                         edge_dim=edge_dim, **variant)
    _compare(ours, theirs, x, edge_index, edge_attr if edge_dim else None)


@pytest.mark.parametrize("heads, concat, edge_dim, bipartite", GRID)
@pytest.mark.parametrize("variant", [{}, {"add_self_loops": False}, {"residual": True, "bias": False},
                                     {"fill_value": 0.5, "negative_slope": 0.1}])
def test_gat_conv_equals_pyg(heads, concat, edge_dim, bipartite, variant):
    x, edge_index, edge_attr = _graph(bipartite)
    ours, theirs = _pair("GATConv", (5, 4) if bipartite else 5, heads=heads, concat=concat, edge_dim=edge_dim,
                         **variant)
    _compare(ours, theirs, x, edge_index, edge_attr if edge_dim else None)


@pytest.mark.parametrize("heads, concat, edge_dim, bipartite", GRID)
@pytest.mark.parametrize("variant", [{}, {"add_self_loops": False}, {"residual": True, "bias": False},
                                     {"share_weights": True}, {"fill_value": "add", "negative_slope": 0.3}])
def test_gatv2_conv_equals_pyg(heads, concat, edge_dim, bipartite, variant):
    if variant.get("share_weights") and bipartite:
        pytest.skip("shared weights need equal source and destination sizes")
    x, edge_index, edge_attr = _graph(bipartite)
    ours, theirs = _pair("GATv2Conv", (5, 4) if bipartite else 5, heads=heads, concat=concat, edge_dim=edge_dim,
                         **variant)
    _compare(ours, theirs, x, edge_index, edge_attr if edge_dim else None)


def test_gat_conv_source_only_tuple_and_size():
    """GATConv's (x_src, None) form with an explicit size, as PyG allows it."""
    x, edge_index, _ = _graph(True)
    ours, theirs = _pair("GATConv", 5, heads=2, add_self_loops=False)
    _compare(ours, theirs, (x[0], None), edge_index, None, size=(N_SRC, N_DST))


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv"])
def test_graph_formats_edge_index_and_torch_sparse(name):
    """EdgeIndex and torch.sparse adjacency (COO, CSR; PyG's adj_t convention) give PyG's
    results and PyG's return forms."""
    x, edge_index, _ = _graph(False)
    edge_index = torch.unique(edge_index, dim=1).contiguous()  # a sparse adjacency has no duplicates
    kwargs = {} if name == "TransformerConv" else {"add_self_loops": False}
    ours, theirs = _pair(name, 5, heads=2, **kwargs)
    adj = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.size(1), dtype=torch.float64),
                                  (N_SRC, N_SRC)).coalesce()
    for graph in (EdgeIndex(edge_index, sparse_size=(N_SRC, N_SRC)), adj, adj.to_sparse_csr()):
        got = ours(x, graph, return_attention_weights=True)
        want = theirs(x, graph, return_attention_weights=True)
        torch.testing.assert_close(got[0], want[0])
        got_alpha, want_alpha = got[1][1], want[1][1]
        torch.testing.assert_close(got_alpha, want_alpha)
        if isinstance(want[1][0], torch.Tensor) and want[1][0].is_sparse:
            torch.testing.assert_close(got[1][0].to_dense(), want[1][0].to_dense())


def test_unsupported_graph_argument_gets_a_clear_error():
    conv = gattn_nn.GATConv(5, 4).double()
    x, _, _ = _graph(False)
    with pytest.raises(TypeError, match="edge_index"):
        conv(x, [[0, 1], [1, 2]])
    with pytest.raises(TypeError, match="integer"):
        conv(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x_dst is required"):
        gattn_nn.TransformerConv(5, 4).double()((x, None), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="edge_dim=None"):
        gattn_nn.TransformerConv(5, 4).double()(x, torch.zeros(2, 3, dtype=torch.long), torch.randn(3, 2))
    with pytest.raises(ValueError, match="`x` must have 5 features"):
        gattn_nn.GATv2Conv(5, 4)(torch.randn(3, 6), torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv"])
def test_lazy_input_size(name):
    x, edge_index, _ = _graph(False)
    torch.manual_seed(1)
    ours = getattr(gattn_nn, name)(-1, 4, heads=2).double()
    theirs = getattr(pyg_nn, name)(-1, 4, heads=2).double()
    ours(x, edge_index), theirs(x, edge_index)  # materialise the lazy weights
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(x, edge_index), theirs(x, edge_index))


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv", "GraphTransformerConv"])
def test_message_hooks_and_explain_use_pygs_path_with_the_same_result(name):
    """A message hook (or the explainer) needs the materialised messages: the layer runs
    PyG's propagate then, and the result equals the fused one. Propagate-level hooks run
    on the fused path too."""
    x, edge_index, _ = _graph(False)
    torch.manual_seed(2)
    conv = getattr(gattn_nn, name)(5, 4, heads=2).double()
    fused = conv(x, edge_index)
    calls = []
    handle = conv.register_propagate_forward_hook(lambda module, inputs, out: calls.append(out.shape))
    conv(x, edge_index)
    assert calls, "propagate hook did not run on the fused path"
    handle.remove()
    messages = []
    handle = conv.register_message_forward_hook(lambda module, inputs, out: messages.append(out.shape))
    assert not conv.fusable()
    torch.testing.assert_close(conv(x, edge_index), fused)
    assert messages and messages[0][0] >= edge_index.size(1)
    handle.remove()
    assert conv.fusable()


@pytest.mark.parametrize("name", ["TransformerConv", "GraphTransformerConv"])
def test_hooked_or_replaced_projections_are_called_as_they_are(name):
    """The fused layers compute Q and K|V with their own matmuls only while those layers are
    plain Linears: a forward hook on one, or a replacement module (an adapter), is called."""
    x, edge_index, _ = _graph(False)
    torch.manual_seed(3)
    conv = getattr(gattn_nn, name)(5, 4, heads=2).double()
    plain = conv(x, edge_index)
    for lin in (conv.lin_query, conv.lin_key, conv.lin_value):
        handle = lin.register_forward_hook(lambda module, inputs, out: out * 2.0)
        hooked = conv(x, edge_index)
        assert not torch.allclose(hooked, plain), "a forward hook on a projection was skipped"
        handle.remove()
        torch.testing.assert_close(conv(x, edge_index), plain)
    seen = []
    handle = conv.lin_key.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0].shape))
    conv(x.detach().requires_grad_(), edge_index).sum().backward()
    assert seen, "a backward hook on a projection was skipped"
    handle.remove()

    from torch_geometric.nn.dense.linear import Linear

    class Scaled(Linear):  # an adapter-like subclass: its own forward must run
        def forward(self, inputs):
            return super().forward(inputs) * 0.5

    replaced = Scaled(5, conv.lin_query.weight.size(0)).double()
    replaced.load_state_dict(conv.lin_query.state_dict())
    conv.lin_query = replaced
    assert not torch.allclose(conv(x, edge_index), plain), "a replaced query projection was bypassed"


def test_gnn_explainer_runs_on_gattn_layers():
    from torch_geometric.explain import Explainer, GNNExplainer

    x, edge_index, _ = _graph(False)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = gattn_nn.GATConv(5, 4, heads=2)
            self.conv2 = gattn_nn.TransformerConv(8, 3)

        def forward(self, x, edge_index):
            return self.conv2(self.conv1(x, edge_index).relu(), edge_index)

    explainer = Explainer(Net(), GNNExplainer(epochs=3), explanation_type="model", edge_mask_type="object",
                          node_mask_type="attributes",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    explanation = explainer(x.float(), edge_index, index=0)
    assert explanation.edge_mask.shape == (edge_index.size(1),)


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv"])
def test_attention_dropout_is_fused_unbiased_and_consistent(name):
    """Training-mode dropout: the mean over many draws is the evaluation output, and the
    returned attention (after dropout for GAT layers, before it for TransformerConv, as in
    PyG) is the one the output was computed with."""
    x, edge_index, _ = _graph(False)
    kwargs = {"root_weight": False} if name == "TransformerConv" else {"bias": False}
    torch.manual_seed(3)
    conv = getattr(gattn_nn, name)(5, 4, heads=2, dropout=0.4, **kwargs).double()
    conv.eval()
    reference = conv(x, edge_index)
    conv.train()
    torch.manual_seed(4)
    draws = torch.stack([conv(x, edge_index) for _ in range(300)])
    assert not torch.allclose(draws[0], draws[1])
    assert (draws.mean(0) - reference).abs().max() < 0.15 * reference.abs().max() + 0.05
    out, (looped, alpha) = conv(x, edge_index, return_attention_weights=True)
    if name != "TransformerConv":
        value = (conv.lin if name == "GATConv" else conv.lin_l)(x).view(-1, 2, 4)
        src, dst = looped
        rebuilt = torch.zeros(x.size(0), 2, 4, dtype=x.dtype).index_add(0, dst, alpha.unsqueeze(-1) * value[src])
        torch.testing.assert_close(out, rebuilt.view(x.size(0), -1))
        assert (alpha == 0).any()  # dropped coefficients are returned as zeros


@pytest.mark.parametrize("name", ["TransformerConv", "GATConv", "GATv2Conv"])
def test_compiles_in_one_graph_with_dropout_and_attention(name):
    x, edge_index, _ = _graph(False)
    kwargs = {} if name == "TransformerConv" else {"add_self_loops": False}
    conv = getattr(gattn_nn, name)(5, 4, heads=2, dropout=0.3, **kwargs).double()
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
    out, (_, alpha) = compiled(x, edge_index, return_attention_weights=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and alpha.shape == (edge_index.size(1), 2)
    conv.eval()
    torch.testing.assert_close(compiled(x, edge_index), conv(x, edge_index))
    torch._dynamo.reset()


def test_gat_head_dot_matches_mul_sum_and_gradcheck():
    """GATConv's attention logits per node and head: the values of (x * att).sum(-1), and the
    gradients (float64 gradcheck), also when only one input needs one."""
    from gattn.nn.gat_conv import head_dot

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    att = torch.randn(1, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.testing.assert_close(head_dot(x, att), (x * att).sum(-1))
    assert torch.autograd.gradcheck(head_dot, (x, att))
    (dx,) = torch.autograd.grad(head_dot(x, att.detach()).sum(), x)
    torch.testing.assert_close(dx, att.detach().expand_as(x))
    (datt,) = torch.autograd.grad(head_dot(x.detach(), att).square().sum(), att)
    torch.testing.assert_close(datt, torch.autograd.grad(((x.detach() * att).sum(-1)).square().sum(), att)[0])
