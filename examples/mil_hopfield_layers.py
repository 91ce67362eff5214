"""The three Hopfield layers on ragged and padded input.

python examples/mil_hopfield_layers.py
"""

import torch

from gattn.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling

# three bags of 4, 0 and 2 instances, stacked without padding
x = torch.randn(6, 32)
ptr = torch.tensor([0, 4, 4, 6])

# self-association inside every bag (state patterns = stored patterns), 4 heads
hopfield = Hopfield(32, num_heads=4, update_steps_max=3)
out, association = hopfield(x, ptr=ptr, return_association=True)
print("Hopfield:", tuple(out.shape), "association edges:", tuple(association.edge_index.shape))

# the same bags padded, with a PyTorch-style mask (True = ignore): the same numbers
padded = torch.zeros(3, 4, 32)
padded[0], padded[2, :2] = x[:4], x[4:]
mask = torch.tensor([[False] * 4, [True] * 4, [False, False, True, True]])
print("padded agrees:", torch.allclose(hopfield(padded, mask=mask)[0], out[:4], atol=1e-5))

# pooling every bag with 2 learned state patterns; the empty bag gives zeros
pooling = HopfieldPooling(32, quantity=2, num_heads=4)
print("HopfieldPooling:", tuple(pooling(x, ptr).shape), "empty bag:", pooling(x, ptr)[1].abs().sum().item())

# a learned lookup table of 10 patterns
lookup = HopfieldLayer(32, quantity=10)
print("HopfieldLayer:", tuple(lookup(x).shape))
