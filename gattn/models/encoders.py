"""Embeddings of categorical node and edge features: OGB's molecule encoders without ogb.

:class:`AtomEncoder` and :class:`BondEncoder` compute what ``ogb.graphproppred.mol_encoder``
computes (one embedding table per feature column, summed; Xavier-uniform initialisation)
with the per-feature vocabulary sizes of ``ogb.utils.features`` (atoms: 119, 5, 12, 12, 10,
6, 6, 2, 2; bonds: 5, 6, 2), so the models need no ogb install, and checkpoints keep OGB's
parameter names (``atom_embedding_list.<i>.weight``, ``bond_embedding_list.<i>.weight``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from gattn.nn._checks import check_positive_int

__all__ = ["ATOM_FEATURE_DIMS", "BOND_FEATURE_DIMS", "AtomEncoder", "BondEncoder", "FeatureEmbedding"]

#: Categories of each OGB atom feature (``ogb.utils.features.get_atom_feature_dims()``).
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
#: Categories of each OGB bond feature (``ogb.utils.features.get_bond_feature_dims()``).
BOND_FEATURE_DIMS = (5, 6, 2)


class FeatureEmbedding(nn.Module):
    r"""Sum of one embedding per categorical feature column.

    .. math::
        h = \sum_{c=1}^{F} E_c[x_c], \qquad E_c \in \mathbb{R}^{n_c \times d}

    Args:
        feature_dims (Sequence[int]): number of categories :math:`n_c` of each column.
        channels (int): embedding size :math:`d`.
        table_name (str, optional): attribute name of the list of tables (for checkpoint compatibility).
            (default: ``"embeddings"``)

    Shapes:
        - **input:** integer ``x`` :math:`(N, F)`.
        - **output:** :math:`(N, \text{channels})`.

    A value outside its column's categories raises a ``ValueError`` naming the column.
    """

    def __init__(self, feature_dims: Sequence[int], channels: int, table_name: str = "embeddings") -> None:
        super().__init__()
        self.feature_dims = tuple(check_positive_int("feature_dims[i]", int(d)) for d in feature_dims)
        self.channels = check_positive_int("channels", channels)
        self._table_name = table_name
        setattr(self, table_name, nn.ModuleList(nn.Embedding(d, channels) for d in self.feature_dims))
        self.reset_parameters()

    @property
    def tables(self) -> nn.ModuleList:
        return getattr(self, self._table_name)

    def reset_parameters(self) -> None:
        for table in self.tables:
            nn.init.xavier_uniform_(table.weight)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_floating_point() or x.dim() != 2 or x.size(1) != len(self.feature_dims):
            raise ValueError(
                f"`x` must be an integer tensor [N, {len(self.feature_dims)}] (one category per feature), "
                f"got dtype {x.dtype} shape {tuple(x.shape)}"
            )
        if x.numel():
            low, high = x.amin(0), x.amax(0)
            for column, size in enumerate(self.feature_dims):
                if int(low[column]) < 0 or int(high[column]) >= size:
                    bad = int(low[column]) if int(low[column]) < 0 else int(high[column])
                    raise ValueError(
                        f"`x` column {column} has category {bad}, outside the {size} categories of that feature"
                    )
        x = x.long()
        out = self.tables[0](x[:, 0])
        for column in range(1, len(self.feature_dims)):
            out = out + self.tables[column](x[:, column])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.feature_dims)}, {self.channels})"


class AtomEncoder(FeatureEmbedding):
    r"""OGB's atom encoder: the 9 atom features of ``ogb.utils.features`` (no ogb needed).

    Args:
        channels (int): the embedding size (the features' embeddings are summed).

    Shapes:
        - **input:** integer atom features :math:`(N, 9)`.
        - **output:** :math:`(N, \text{channels})`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(ATOM_FEATURE_DIMS, channels, "atom_embedding_list")


class BondEncoder(FeatureEmbedding):
    r"""OGB's bond encoder: the 3 bond features of ``ogb.utils.features`` (no ogb needed).

    Args:
        channels (int): the embedding size (the features' embeddings are summed).

    Shapes:
        - **input:** integer bond features :math:`(E, 3)`.
        - **output:** :math:`(E, \text{channels})`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(BOND_FEATURE_DIMS, channels, "bond_embedding_list")
