"""GraphTransformerConv / GraphTransformerLayer against a plain per-node computation of the
paper's equations (Dwivedi & Bresson 2020), gradients, edge cases, errors, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import MessagePassing

from gattn.kernels import available_backends
from gattn.nn.graph_transformer import GraphTransformerConv, GraphTransformerLayer

BACKENDS = [name for name in ("reference", "cpu") if name in available_backends()]


def random_graph(num_src: int, num_dst: int, num_edges: int, seed: int) -> torch.Tensor:
    """[2, E] (source, destination) with isolated destinations, duplicates and self-loops."""
    gen = torch.Generator().manual_seed(seed)
    reachable = max(1, num_dst - 2)  # the last two destinations get no incoming edge
    src = torch.randint(0, num_src, (num_edges,), generator=gen)
    dst = torch.randint(0, reachable, (num_edges,), generator=gen)
    src[-1], dst[-1] = src[0], dst[0]  # a duplicate edge
    if num_src == num_dst:
        src[1], dst[1] = dst[1], dst[1]  # a self-loop
    return torch.stack([src, dst])


def plain_graph_transformer(conv, x_src, x_dst, edge_index, edge_attr):
    """The paper's equations, one destination and one head at a time (no kernel).

    Returns node output [N_dst, H, D], edge output \\hat w [E, H, D] and attention [E, H].
    """
    heads, dim = conv.heads, conv.out_channels

    def project(lin, features):
        out = features @ lin.weight.t()
        if lin.bias is not None:
            out = out + lin.bias
        return out.view(-1, heads, dim)

    query, key, value = (
        project(conv.lin_query, x_dst), project(conv.lin_key, x_src), project(conv.lin_value, x_src)
    )
    edge_proj = None if edge_attr is None else project(conv.lin_edge, edge_attr)
    num_edges = edge_index.size(1)
    out = torch.zeros(x_dst.size(0), heads, dim, dtype=x_dst.dtype)
    edge_out = torch.zeros(num_edges, heads, dim, dtype=x_dst.dtype)
    alpha = torch.zeros(num_edges, heads, dtype=x_dst.dtype)
    for i in range(x_dst.size(0)):
        incoming = (edge_index[1] == i).nonzero().flatten()
        if incoming.numel() == 0:
            continue
        sources = edge_index[0, incoming]
        for h in range(heads):
            w_hat = query[i, h] * key[sources, h] / math.sqrt(dim)  # [n, D]
            if edge_proj is not None:
                w_hat = w_hat * edge_proj[incoming, h]
            weights = torch.softmax(w_hat.sum(-1), dim=0)
            out[i, h] = (weights[:, None] * value[sources, h]).sum(0)
            edge_out[incoming, h] = w_hat
            alpha[incoming, h] = weights
    return out, edge_out, alpha


def merge(tensor: torch.Tensor, concat: bool) -> torch.Tensor:
    return tensor.reshape(tensor.size(0), -1) if concat else tensor.mean(1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_edges", [False, True])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("bipartite", [False, True])
def test_conv_matches_plain_equations(backend, with_edges, concat, bipartite):
    torch.manual_seed(0)
    num_src, num_dst, num_edges = (7, 5, 16) if bipartite else (6, 6, 14)
    in_src, in_dst, edge_dim, heads, dim = 5, 3, 4, 3, 4
    conv = GraphTransformerConv(
        (in_src, in_dst) if bipartite else in_src, dim, heads=heads, concat=concat,
        edge_dim=edge_dim if with_edges else None, backend=backend,
    ).double()
    with torch.no_grad():  # non-zero biases, so they are checked too
        for lin in (conv.lin_query, conv.lin_key, conv.lin_value, conv.lin_edge):
            if lin is not None:
                lin.bias.normal_()
    x_src = torch.randn(num_src, in_src, dtype=torch.float64)
    x_dst = torch.randn(num_dst, in_dst, dtype=torch.float64) if bipartite else x_src
    edge_index = random_graph(num_src, num_dst, num_edges, seed=1)
    edge_attr = torch.randn(num_edges, edge_dim, dtype=torch.float64) if with_edges else None
    x = (x_src, x_dst) if bipartite else x_src

    result = conv(x, edge_index, edge_attr, return_attention_weights=True)
    expected_out, expected_edges, expected_alpha = plain_graph_transformer(
        conv, x_src, x_dst, edge_index, edge_attr
    )
    if with_edges:
        out, edge_out, (returned_index, alpha) = result
        assert edge_out.shape == (num_edges, heads * dim if concat else dim)
        torch.testing.assert_close(edge_out, merge(expected_edges, concat))
    else:
        out, (returned_index, alpha) = result
    assert returned_index is edge_index
    assert out.shape == (num_dst, heads * dim if concat else dim)
    torch.testing.assert_close(out, merge(expected_out, concat))
    torch.testing.assert_close(alpha, expected_alpha)
    assert torch.all(out[-2:] == 0)  # isolated destinations: zeros, not NaN
    # without return_attention_weights the same values come back, without the extra element
    plain = conv(x, edge_index, edge_attr)
    torch.testing.assert_close(plain[0] if with_edges else plain, out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_weights_sum_to_one_per_destination(backend):
    torch.manual_seed(1)
    conv = GraphTransformerConv(6, 4, heads=2, edge_dim=3, backend=backend)
    edge_index = random_graph(9, 9, 30, seed=2)
    x, edge_attr = torch.randn(9, 6), torch.randn(30, 3)
    _, _, (_, alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    sums = torch.zeros(9, 2).index_add(0, edge_index[1], alpha)
    has_incoming = torch.bincount(edge_index[1], minlength=9) > 0
    torch.testing.assert_close(sums[has_incoming], torch.ones(int(has_incoming.sum()), 2))
    assert torch.all(sums[~has_incoming] == 0)
    assert torch.all(alpha >= 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_edges", [False, True])
def test_conv_gradcheck_float64(backend, with_edges):
    torch.manual_seed(2)
    conv = GraphTransformerConv(
        3, 2, heads=2, edge_dim=2 if with_edges else None, backend=backend
    ).double()
    edge_index = random_graph(5, 5, 9, seed=3)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    if with_edges:
        assert torch.autograd.gradcheck(lambda a, e: conv(a, edge_index, e), (x, edge_attr))
    else:
        assert torch.autograd.gradcheck(lambda a: conv(a, edge_index), (x,))
    # parameters receive gradients too
    out = conv(x, edge_index, edge_attr if with_edges else None)
    loss = sum(o.square().sum() for o in out) if with_edges else out.square().sum()
    loss.backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_bipartite_gradcheck_float64():
    torch.manual_seed(3)
    conv = GraphTransformerConv((3, 2), 2, heads=2, edge_dim=2).double()
    edge_index = random_graph(4, 3, 6, seed=4)
    x_src = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x_dst = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, d, e: conv((s, d), edge_index, e), (x_src, x_dst, edge_attr)
    )


def test_attention_dropout_is_fused_and_unbiased():
    """Attention dropout is the kernel's `dropout_p` (no unfused E x H x D path): a rate too
    small to drop anything gives the evaluation output; a real one changes training outputs
    only, keeps isolated nodes at zero and is unbiased."""
    torch.manual_seed(4)
    edge_index = random_graph(8, 8, 20, seed=5)
    x, edge_attr = torch.randn(8, 6, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    conv = GraphTransformerConv(6, 4, heads=2, edge_dim=3, dropout=1e-12).double()
    conv.train()
    train_out, train_edges, (_, train_alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    conv.eval()
    fused_out, fused_edges, (_, fused_alpha) = conv(x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(train_out, fused_out)
    torch.testing.assert_close(train_edges, fused_edges)
    torch.testing.assert_close(train_alpha, fused_alpha)
    conv.dropout = 0.5
    conv.train()
    dropped, _ = conv(x, edge_index, edge_attr)
    assert not torch.allclose(dropped, fused_out)
    assert torch.all(dropped[-2:] == 0)
    dropped.sum().backward()
    assert conv.lin_query.weight.grad is not None
    mean = torch.stack([conv(x, edge_index, edge_attr)[0] for _ in range(300)]).mean(0)
    assert (mean - fused_out).abs().max() < 0.15 * fused_out.abs().max() + 0.05
    conv.eval()
    torch.testing.assert_close(conv(x, edge_index, edge_attr)[0], fused_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_without_edges_gives_zeros(backend):
    conv = GraphTransformerConv(4, 3, heads=2, edge_dim=2, backend=backend)
    out, edge_out = conv(torch.randn(5, 4), torch.empty(2, 0, dtype=torch.long), torch.empty(0, 2))
    assert out.shape == (5, 6) and torch.all(out == 0)
    assert edge_out.shape == (0, 6)


def test_update_edges_false_returns_nodes_only():
    conv = GraphTransformerConv(4, 3, heads=2, edge_dim=2, update_edges=False)
    out = conv(torch.randn(5, 4), random_graph(5, 5, 8, seed=6), torch.randn(8, 2))
    assert isinstance(out, torch.Tensor) and out.shape == (5, 6)


def test_conv_errors_name_the_argument():
    conv = GraphTransformerConv(4, 3, heads=2, edge_dim=2)
    x, edge_index = torch.randn(5, 4), random_graph(5, 5, 8, seed=7)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, edge_index)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, edge_index, torch.randn(7, 2))
    with pytest.raises(ValueError, match="edge_attr"):
        GraphTransformerConv(4, 3)(x, edge_index, torch.randn(8, 2))
    with pytest.raises(ValueError, match="`x`"):
        conv(torch.randn(5, 3), edge_index, torch.randn(8, 2))
    with pytest.raises(TypeError, match="`x`"):
        conv(torch.ones(5, 4, dtype=torch.long), edge_index, torch.randn(8, 2))
    with pytest.raises(ValueError, match="edge_index"):
        conv(x, torch.tensor([[0, 9], [1, 2]]), torch.randn(2, 2))
    with pytest.raises(ValueError, match="heads"):
        GraphTransformerConv(4, 3, heads=0)
    with pytest.raises(ValueError, match="in_channels"):
        GraphTransformerConv((4, 3, 2), 3)
    with pytest.raises(ValueError, match="x_dst is required"):
        conv((x, None), edge_index, torch.randn(8, 2))
    with pytest.raises(ValueError, match="dropout"):
        GraphTransformerConv(4, 3, dropout=1.0)


def test_conv_repr_and_reset_parameters():
    conv = GraphTransformerConv((4, 5), 3, heads=2, edge_dim=2)
    assert repr(conv) == "GraphTransformerConv((4, 5), 3, heads=2, concat=True, edge_dim=2)"
    with torch.no_grad():
        conv.lin_key.weight.fill_(7.0)
        conv.lin_key.bias.fill_(7.0)
    conv.reset_parameters()
    assert not torch.any(conv.lin_key.weight == 7.0)
    assert torch.all(conv.lin_key.bias == 0)
    assert isinstance(conv, MessagePassing)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("with_edges", [False, True])
@pytest.mark.parametrize("bipartite", [False, True])
def test_conv_on_cuda_matches_cpu_reference(with_edges, bipartite):
    """The default CUDA backend (Triton) gives the reference's values and gradients."""
    torch.manual_seed(9)
    num_src, num_dst, num_edges = (40, 30, 300) if bipartite else (40, 40, 300)
    in_channels = (6, 5) if bipartite else 6
    cpu_conv = GraphTransformerConv(in_channels, 8, heads=4, edge_dim=3 if with_edges else None,
                                    backend="reference")
    cuda_conv = GraphTransformerConv(in_channels, 8, heads=4, edge_dim=3 if with_edges else None)
    cuda_conv.load_state_dict(cpu_conv.state_dict())
    cuda_conv.cuda()
    x_src = torch.randn(num_src, 6)
    x_dst = torch.randn(num_dst, 5) if bipartite else x_src
    edge_index = random_graph(num_src, num_dst, num_edges, seed=12)
    edge_attr = torch.randn(num_edges, 3) if with_edges else None

    def run(conv, device):
        inputs = [t.to(device).requires_grad_() for t in (x_src, x_dst)]
        x = tuple(inputs) if bipartite else inputs[0]
        attr = None if edge_attr is None else edge_attr.to(device).requires_grad_()
        out = conv(x, edge_index.to(device), attr)
        outputs = out if isinstance(out, tuple) else (out,)
        sum(o.square().sum() for o in outputs).backward()
        grads = [p.grad for p in conv.parameters()] + [inputs[0].grad]
        return [o.detach().cpu() for o in outputs] + [g.cpu() for g in grads]

    for got, want in zip(run(cuda_conv, "cuda"), run(cpu_conv, "cpu")):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------------------------------------
# GraphTransformerLayer
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["batch", "layer", None])
@pytest.mark.parametrize("with_edges", [False, True])
def test_layer_shapes_and_gradients(norm, with_edges):
    torch.manual_seed(5)
    layer = GraphTransformerLayer(8, heads=2, dropout=0.1, norm=norm,
                                  edge_dim=6 if with_edges else None)
    edge_index = random_graph(7, 7, 15, seed=8)
    x, edge_attr = torch.randn(7, 8), torch.randn(15, 6)
    result = layer(x, edge_index, edge_attr if with_edges else None)
    if with_edges:
        out, edge_out = result
        assert edge_out.shape == (15, 6)
        loss = out.square().sum() + edge_out.square().sum()
    else:
        out = result
        loss = out.square().sum()
    assert out.shape == (7, 8) and torch.isfinite(out).all()
    loss.backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name


@pytest.mark.parametrize("residual", [True, False])
def test_layer_is_the_papers_block(residual):
    """Eval-mode output equals the block written out by hand around the conv."""
    torch.manual_seed(6)
    layer = GraphTransformerLayer(8, heads=2, norm="layer", edge_dim=4, residual=residual).eval()
    edge_index = random_graph(6, 6, 12, seed=9)
    x, edge_attr = torch.randn(6, 8), torch.randn(12, 4)
    out, edge_out = layer(x, edge_index, edge_attr)
    node_hat, edge_hat = layer.attention(x, edge_index, edge_attr)

    def block(inp, attended, proj, norm1, ffn, norm2):
        h = proj(attended) + (inp if residual else 0)
        h = norm1(h)
        return norm2(ffn(h) + (h if residual else 0))

    expected = block(x, node_hat, layer.lin_out, layer.norm1, layer.ffn, layer.norm2)
    expected_edges = block(edge_attr, edge_hat, layer.lin_edge_out, layer.edge_norm1,
                           layer.edge_ffn, layer.edge_norm2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(edge_out, expected_edges)
    # the FFN is 2x wide, as the paper
    assert layer.ffn[0].out_features == 16 and layer.edge_ffn[0].out_features == 8
    # and the pieces are the paper's: relu FFN, O projections of the concatenated heads
    assert isinstance(layer.ffn[1], torch.nn.ReLU)
    torch.testing.assert_close(layer.ffn(x), layer.ffn[3](F.relu(layer.ffn[0](x))))


def test_layer_errors_and_repr():
    with pytest.raises(ValueError, match="divisible"):
        GraphTransformerLayer(10, heads=3)
    with pytest.raises(ValueError, match="norm"):
        GraphTransformerLayer(8, heads=2, norm="group")
    layer = GraphTransformerLayer(8, heads=2)
    with pytest.raises(ValueError, match="edge_attr"):
        layer(torch.randn(4, 8), random_graph(4, 4, 5, seed=1), torch.randn(5, 3))
    assert repr(layer) == "GraphTransformerLayer(8, heads=2, norm='batch')"
    layer.reset_parameters()
    assert torch.all(layer.attention.lin_query.bias == 0)  # the conv's own init survives


# ------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_edges", [True, False])
def test_torch_compile_fullgraph(with_edges):
    """The whole layer compiles as one graph; values and gradients match eager."""
    torch._dynamo.reset()
    torch.manual_seed(7)
    layer = GraphTransformerLayer(8, heads=2, norm="layer", edge_dim=4 if with_edges else None)
    edge_index = random_graph(6, 6, 12, seed=10)
    x = torch.randn(6, 8, requires_grad=True)
    edge_attr = torch.randn(12, 4, requires_grad=True) if with_edges else None
    leaves = (x, edge_attr) if with_edges else (x,)

    def run(module):
        outputs = module(x, edge_index, edge_attr)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = sum(o.square().sum() for o in outputs)
        return outputs, torch.autograd.grad(loss, leaves)

    eager, eager_grads = run(layer)
    compiled_layer = torch.compile(layer, fullgraph=True, backend="aot_eager")
    compiled, compiled_grads = run(compiled_layer)
    for got, want in zip(compiled + compiled_grads, eager + eager_grads):
        torch.testing.assert_close(got, want)
    torch._dynamo.reset()


@pytest.mark.parametrize("with_edges", [True, False])
def test_torch_compile_fullgraph_with_dropout_and_attention_weights(with_edges):
    """Issue 9, defect 5: fullgraph compile in training mode with attention dropout (a
    data-dependent guard before) and with return_attention_weights=True (the lazy backend
    import, skipped by dynamo, before)."""
    torch._dynamo.reset()
    torch.manual_seed(8)
    conv = GraphTransformerConv(8, 4, heads=2, dropout=0.3, edge_dim=4 if with_edges else None,
                                update_edges=False)
    layer = GraphTransformerLayer(8, heads=2, norm="layer", attention_dropout=0.3,
                                  edge_dim=4 if with_edges else None)
    edge_index = random_graph(6, 6, 12, seed=11)
    x = torch.randn(6, 8, requires_grad=True)
    edge_attr = torch.randn(12, 4) if with_edges else None
    compiled_conv = torch.compile(conv, fullgraph=True, backend="aot_eager")
    out, (_, alpha) = compiled_conv(x, edge_index, edge_attr, return_attention_weights=True)
    (out.sum() + alpha.square().sum()).backward()
    assert x.grad is not None and alpha.shape == (12, 2)
    compiled_layer = torch.compile(layer, fullgraph=True, backend="aot_eager")
    result = compiled_layer(x, edge_index, edge_attr)
    (result[0] if with_edges else result).sum().backward()
    conv.eval()
    torch.testing.assert_close(compiled_conv(x, edge_index, edge_attr), conv(x, edge_index, edge_attr))
    torch._dynamo.reset()


def test_attention_weights_carry_gradients_and_double_backward_is_explained():
    """Issue 9, defect 7: the returned attention is differentiable (a loss on it gives the
    reference gradients); a second derivative raises NotImplementedError naming the op."""
    torch.manual_seed(12)
    edge_index = random_graph(7, 7, 18, seed=13)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    grads = {}
    for backend in ("cpu", "reference"):
        conv = GraphTransformerConv(5, 3, heads=2, backend=backend).double()
        torch.manual_seed(14)
        conv.reset_parameters()
        out, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
        assert alpha.requires_grad
        grads[backend] = torch.autograd.grad(alpha.square().sum() + out.sum(), (x, conv.lin_query.weight))
    for got, want in zip(grads["cpu"], grads["reference"]):
        torch.testing.assert_close(got, want)
    conv = GraphTransformerConv(5, 3, heads=2).double()
    (dx,) = torch.autograd.grad(conv(x, edge_index).square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward.*gattn.kernels.edge_attention"):
        dx.sum().backward()
