"""The counting-sort CSR/CSC build gives exactly what a stable argsort gives."""

from __future__ import annotations

import pytest
import torch

from gattn import kernels as K
from gattn.kernels._sort import stable_sort_by_key

from .graphs import awkward_graph


def _argsort_views(edge_index: torch.Tensor, num_src: int, num_dst: int):
    """rowptr, col, perm, colptr, row, csc_edge built with torch's stable argsort."""
    src, dst = edge_index
    perm = torch.argsort(dst, stable=True)
    col, dst_sorted = src[perm], dst[perm]
    rowptr = K.ptr_from_index(dst_sorted, num_dst)
    csc_pos = torch.argsort(col, stable=True)
    colptr = K.ptr_from_index(col[csc_pos], num_src)
    return rowptr, col, perm, colptr, dst_sorted[csc_pos], perm[csc_pos]


@pytest.mark.parametrize("num_src,num_dst,num_edges", [(40, 40, 300), (30, 70, 500), (5, 3, 0), (1, 1, 7)])
def test_counting_sort_csr_equals_stable_argsort(num_src, num_dst, num_edges):
    edge_index = awkward_graph(num_src, num_dst, num_edges, seed=num_edges, hub_degree=num_edges // 4)
    csr = K.CSR(edge_index, num_src, num_dst)
    expected = _argsort_views(edge_index, num_src, num_dst)
    got = (csr.rowptr, csr.col, csr.perm, *csr.csc())
    for name, a, b in zip(("rowptr", "col", "perm", "colptr", "row", "csc_edge"), got, expected):
        assert torch.equal(a, b), name


def test_stable_sort_by_key_keeps_input_order_of_equal_keys():
    keys = torch.tensor([2, 0, 2, 1, 0, 2, 4])
    ptr, order = stable_sort_by_key(keys, 5)
    assert order.tolist() == [1, 4, 3, 0, 2, 5, 6]
    assert ptr.tolist() == [0, 2, 3, 6, 6, 7]


def test_stable_sort_by_key_carries_rows_in_sorted_order():
    gen = torch.Generator().manual_seed(4)
    keys = torch.randint(0, 9, (200,), generator=gen)
    carry = torch.randint(-50, 50, (3, 200), generator=gen)
    ptr, order, carried = stable_sort_by_key(keys, 9, carry)
    assert torch.equal(order, torch.argsort(keys, stable=True))
    assert torch.equal(carried, carry[:, order])
    assert torch.equal(ptr, K.ptr_from_index(keys[order], 9))
    csr = K.CSR(torch.stack([carry[0].abs() % 7, keys]), 7, 9)
    assert torch.equal(csr.sorted_destinations(), keys[order])  # the destinations, from rowptr


def test_the_plain_backward_builds_no_caller_edge_ids_over_the_sources():
    """The CSC keeps (row, CSR position) per source-sorted edge; the caller's edge ids (a third
    E-long array: 0.5 GB at ogbn-products' 62M edges) are made only for per-edge inputs."""
    edge_index = awkward_graph(30, 40, 300, seed=2, hub_degree=30)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(40, 2, 4, generator=gen, requires_grad=True)
    k = torch.randn(30, 2, 4, generator=gen, requires_grad=True)
    v = torch.randn(30, 2, 4, generator=gen, requires_grad=True)
    K.edge_attention(q, k, v, edge_index, num_nodes=(30, 40), backend="cpu").sum().backward()
    csr = K.get_csr(edge_index, 30, 40)
    assert csr._csc is not None and csr._csc_edge is None
    colptr, row, csc_pos = csr.csc_index()
    expected = _argsort_views(edge_index, 30, 40)
    assert torch.equal(colptr, expected[3]) and torch.equal(row, expected[4])
    assert torch.equal(csr.perm[csc_pos], expected[5])
    # a per-edge scale is read through the caller's ids: they are built then
    scale = torch.rand(edge_index.size(1), 2, 4, generator=gen, requires_grad=True)
    K.edge_attention(q, k, v, edge_index, num_nodes=(30, 40), edge_scale=scale, backend="cpu").sum().backward()
    assert csr._csc_edge is not None and torch.equal(csr._csc_edge, expected[5])
