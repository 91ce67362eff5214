"""The layers stay light: OGB's encoders without ogb, and no training stack behind the layers."""

from __future__ import annotations

import pytest
import torch

from gattn.models import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS, AtomEncoder, BondEncoder


def test_encoder_vocabularies_are_ogbs():
    features = pytest.importorskip("ogb.utils.features")
    assert list(ATOM_FEATURE_DIMS) == features.get_atom_feature_dims()
    assert list(BOND_FEATURE_DIMS) == features.get_bond_feature_dims()


def test_encoders_equal_ogbs_with_the_same_weights():
    mol_encoder = pytest.importorskip("ogb.graphproppred.mol_encoder")
    gen = torch.Generator().manual_seed(0)
    atoms = torch.stack([torch.randint(0, d, (30,), generator=gen) for d in ATOM_FEATURE_DIMS], 1)
    bonds = torch.stack([torch.randint(0, d, (50,), generator=gen) for d in BOND_FEATURE_DIMS], 1)
    for ours, theirs, x in ((AtomEncoder(16), mol_encoder.AtomEncoder(16), atoms),
                            (BondEncoder(16), mol_encoder.BondEncoder(16), bonds)):
        ours.load_state_dict(theirs.state_dict())  # same parameter names: old checkpoints load
        torch.testing.assert_close(ours(x), theirs(x))


def test_encoder_errors_name_the_column():
    encoder = BondEncoder(4)
    with pytest.raises(ValueError, match="column 1 has category 6"):
        encoder(torch.tensor([[0, 6, 1]]))
    with pytest.raises(ValueError, match=r"integer tensor \[N, 3\]"):
        encoder(torch.zeros(2, 3))
