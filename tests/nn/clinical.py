"""A synthetic multi-label note task for the clinical text models' learning tests.

Code ``c`` is present in a note exactly when token id ``c`` occurs in it; other tokens are
ids ``>= codes``. A model that attends to the right token solves it.
"""

from __future__ import annotations

import torch


def presence_batch(
    gen: torch.Generator, notes: int, vocab: int, codes: int, rate: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ragged token ids [R], ptr [B+1] and 0/1 targets [B, codes]."""
    lengths = torch.randint(5, 30, (notes,), generator=gen)
    ptr = torch.zeros(notes + 1, dtype=torch.long)
    ptr[1:] = lengths.cumsum(0)
    ids = torch.randint(codes, vocab, (int(ptr[-1]),), generator=gen)
    target = (torch.rand(notes, codes, generator=gen) < rate).float()
    for b, c in target.nonzero().tolist():
        ids[int(ptr[b]) + int(torch.randint(int(lengths[b]), (), generator=gen))] = c
    target = torch.stack([(ids[int(ptr[b]):int(ptr[b + 1])].unsqueeze(1) == torch.arange(codes)).any(0)
                          for b in range(notes)]).float()  # a code token may overwrite another
    return ids, ptr, target


def train_and_score(model: torch.nn.Module, steps: int, vocab: int, codes: int, seed: int = 0) -> float:
    """Adam with LDAMLoss on fresh batches; returns the accuracy of the logits' signs on new notes."""
    from gattn.losses import LDAMLoss

    gen = torch.Generator().manual_seed(seed)
    loss_fn = LDAMLoss.from_targets(presence_batch(gen, 256, vocab, codes)[2], max_margin=0.5)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        ids, ptr, target = presence_batch(gen, 16, vocab, codes)
        logits = model(ids, ptr)
        optimiser.zero_grad()
        loss_fn(logits, target).backward()
        optimiser.step()
    model.eval()
    ids, ptr, target = presence_batch(gen, 64, vocab, codes)
    with torch.no_grad():
        return float(((model(ids, ptr) > 0).float() == target).float().mean())


def assert_same_parameter_gradients(model: torch.nn.Module, fast, reference, weight: torch.Tensor, must_have: str):
    """The gradients of ``(out * weight).sum()`` w.r.t. every parameter agree between two ways
    of computing ``out`` (the ragged model and a per-document reference)."""
    grads = []
    for run in (fast, reference):
        model.zero_grad()
        (run() * weight).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and must_have in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)
