"""Explanations of per-label token attention: the top tokens per predicted code, as table rows
and as an HTML page that highlights them in the note.

For any model that returns one attention distribution over a document's tokens per label:
:class:`gattn.models.TransICD` (``return_attention=True`` gives ``[R, C]``) and
:class:`gattn.models.LabelDependentAttention` (``word_attention``). Take one document's rows,
``attention[ptr[b]:ptr[b + 1]]``, with its tokens as strings. Standard library and torch only;
the rows are plain dicts, so ``pandas.DataFrame(rows)`` makes a frame where pandas is wanted.
:func:`explanations_html` puts several documents on one page (the pipelines' run folders).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["explanation_html", "explanations_html", "format_table", "top_tokens", "write_explanation_html"]

#: the columns of :func:`format_table`, in order; ``document`` is the caller's (rows of several notes)
_COLUMNS = ("document", "code", "description", "score", "true", "rank", "position", "token", "weight")


def _codes_to_explain(predicted: Sequence[int] | Tensor, num_codes: int, name: str = "predicted") -> list[int]:
    """Indices of the codes to explain, from indices or a bool mask [C]."""
    chosen = torch.as_tensor(predicted)
    if chosen.dtype == torch.bool:
        if chosen.shape != (num_codes,):
            raise ValueError(f"`{name}` as a bool mask must have shape [{num_codes}], got {tuple(chosen.shape)}")
        return chosen.nonzero().flatten().tolist()
    if chosen.numel() == 0 and chosen.dim() == 1:  # an empty list (float to torch): no code
        return []
    if chosen.is_floating_point() or chosen.dim() > 1:
        raise TypeError(f"`{name}` must be code indices (ints) or a bool mask [{num_codes}], got {chosen.dtype}")
    indices = chosen.flatten().tolist()
    for index in indices:
        if not 0 <= index < num_codes:
            raise ValueError(f"`{name}` holds code index {index}, out of range for {num_codes} codes")
    return indices


def top_tokens(
    tokens: Sequence[str],
    attention: Tensor,
    codes: Sequence[str],
    predicted: Sequence[int] | Tensor,
    *,
    k: int = 10,
    scores: Tensor | Sequence[float] | None = None,
    code_descriptions: Sequence[str] | None = None,
    true_codes: Sequence[int] | Tensor | None = None,
) -> list[dict]:
    """The ``k`` tokens of highest attention for each predicted code of one document.

    Args:
        tokens (Sequence[str]): the document's tokens, ``L`` strings.
        attention (Tensor): ``[L, C]`` per-code attention over the tokens (``[L, 1]``: one
            distribution shared by all codes, as with ``label_pooling="max"``).
        codes (Sequence[str]): the ``C`` code names.
        predicted (Sequence[int] or Tensor): which codes to explain: indices, or a bool mask ``[C]`` (e.g.
            ``probabilities > 0.5``).
        k (int, optional): tokens per code (fewer when the document is shorter). Default 10.
        scores (Tensor or Sequence[float], optional): optional ``[C]`` predicted probabilities, reported per row.
            (default: ``None``)
        code_descriptions (Sequence[str], optional): optional ``C`` descriptions, reported per row.
            (default: ``None``)
        true_codes (Sequence[int] or Tensor, optional): optional, the document's true codes (indices
            or a bool mask ``[C]``): each row then says whether its code is one of them (``true``).
            (default: ``None``)

    Returns one dict per (code, token) with keys ``code``, ``description``, ``score``,
    ``true``, ``rank`` (1 = highest weight), ``position`` (token index in the document),
    ``token``, ``weight`` (``description``, ``score`` and ``true`` are None when not given);
    codes in the order of ``predicted``, ties broken by position.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}")
    tokens = [str(token) for token in tokens]
    attention = torch.as_tensor(attention).detach().cpu()
    if attention.dim() != 2 or attention.size(0) != len(tokens) or attention.size(1) not in (1, len(codes)):
        raise ValueError(
            f"`attention` must be [L={len(tokens)}, C={len(codes)}] (or [L, 1]) for {len(tokens)} tokens and "
            f"{len(codes)} codes, got {tuple(attention.shape)}"
        )
    if not attention.is_floating_point():
        raise TypeError(f"`attention` must be floating point, got {attention.dtype}")
    for name, values in (("scores", scores), ("code_descriptions", code_descriptions)):
        if values is not None and len(values) != len(codes):
            raise ValueError(f"`{name}` must hold one entry per code ({len(codes)}), got {len(values)}")
    score_list = None if scores is None else torch.as_tensor(scores).detach().cpu().flatten().tolist()
    true_set = None if true_codes is None else set(_codes_to_explain(true_codes, len(codes), "true_codes"))
    rows = []
    for code in _codes_to_explain(predicted, len(codes)):
        column = attention[:, 0 if attention.size(1) == 1 else code]
        order = torch.sort(column, descending=True, stable=True).indices[:k]
        for rank, position in enumerate(order.tolist(), start=1):
            rows.append({
                "code": str(codes[code]),
                "description": None if code_descriptions is None else str(code_descriptions[code]),
                "score": None if score_list is None else float(score_list[code]),
                "true": None if true_set is None else code in true_set,
                "rank": rank,
                "position": position,
                "token": tokens[position],
                "weight": float(column[position]),
            })
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`top_tokens` as a Markdown table (columns with no value left out).

    Args:
        rows (Sequence[dict]): rows of :func:`top_tokens` (or with a ``document`` key added).
    """
    columns = [c for c in _COLUMNS if any(row.get(c) is not None for row in rows)]

    def cell(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        text = "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.6; }
.note { white-space: normal; border: 1px solid #ccc; padding: 1em; }
mark { background: none; padding: 0 0.1em; border-radius: 0.2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.1em 0.5em; }
"""


def _page(title: str, body: list[str]) -> str:
    esc = html.escape(str(title), quote=True)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc}</h1>",
        *body,
        "</body></html>",
    ])


def _document_sections(
    tokens: Sequence[str],
    attention: Tensor,
    codes: Sequence[str],
    predicted: Sequence[int] | Tensor,
    *,
    k: int,
    scores: Tensor | Sequence[float] | None,
    code_descriptions: Sequence[str] | None,
    true_codes: Sequence[int] | Tensor | None,
    level: int,
) -> list[str]:
    """One ``<section>`` per explained code of one document (headings at ``<h{level}>``)."""
    esc = lambda value: html.escape(str(value), quote=True)
    tokens = [str(token) for token in tokens]
    options = dict(k=k, scores=scores, code_descriptions=code_descriptions, true_codes=true_codes)
    top_tokens(tokens, attention, codes, [], **options)  # checks every argument, even with no code chosen
    chosen = _codes_to_explain(predicted, len(codes))
    if not chosen:
        return ["<p>No code predicted for this document.</p>"]
    parts = []
    for code in chosen:
        code_rows = top_tokens(tokens, attention, codes, [code], **options)
        heading = esc(codes[code])
        if code_descriptions is not None:
            heading += f" &ndash; {esc(code_descriptions[code])}"
        if scores is not None:
            heading += f" (p = {float(torch.as_tensor(scores).flatten()[code]):.3f})"
        if code_rows and code_rows[0]["true"] is not None:
            heading += ", a true code" if code_rows[0]["true"] else ", not a true code"
        parts.append(f"<section><h{level}>{heading}</h{level}>")
        parts.append("<table><tr><th>rank</th><th>token</th><th>position</th><th>weight</th></tr>")
        parts += [
            f"<tr><td>{row['rank']}</td><td>{esc(row['token'])}</td><td>{row['position']}</td>"
            f"<td>{row['weight']:.4f}</td></tr>"
            for row in code_rows
        ]
        parts.append("</table>")
        top_weight = max((row["weight"] for row in code_rows), default=0.0)
        marked = {row["position"]: row for row in code_rows}
        words = []
        for position, token in enumerate(tokens):
            row = marked.get(position)
            if row is None:
                words.append(esc(token))
                continue
            opacity = 0.15 + 0.85 * (row["weight"] / top_weight if top_weight > 0 else 1.0)
            words.append(
                f'<mark style="background: rgba(255, 140, 0, {opacity:.3f})" '
                f'title="rank {row["rank"]}, weight {row["weight"]:.4f}">{esc(token)}</mark>'
            )
        parts.append(f'<p class="note">{" ".join(words)}</p></section>')
    return parts


def explanation_html(
    tokens: Sequence[str],
    attention: Tensor,
    codes: Sequence[str],
    predicted: Sequence[int] | Tensor,
    *,
    k: int = 10,
    scores: Tensor | Sequence[float] | None = None,
    code_descriptions: Sequence[str] | None = None,
    true_codes: Sequence[int] | Tensor | None = None,
    title: str = "Attention explanation",
) -> str:
    """A self-contained HTML page: per predicted code, its top-``k`` tokens as a table and the
    note with those tokens highlighted (opacity by weight relative to the code's top token).

    Arguments as :func:`top_tokens`; every text (tokens, codes, descriptions, title) is
    HTML-escaped.

    Args:
        tokens (Sequence[str]): the document's ``L`` tokens.
        attention (Tensor): per-code attention over the tokens :math:`(L, C)` (or :math:`(L, 1)`).
        codes (Sequence[str]): the ``C`` code names.
        predicted (Sequence[int] or Tensor): the codes to explain: indices or a bool mask :math:`(C)`.
        k (int, optional): tokens per code. (default: ``10``)
        scores (Tensor or Sequence[float], optional): predicted probabilities :math:`(C)`.
            (default: ``None``)
        code_descriptions (Sequence[str], optional): ``C`` descriptions. (default: ``None``)
        true_codes (Sequence[int] or Tensor, optional): the true codes (indices or a bool mask).
            (default: ``None``)
        title (str, optional): the page title. (default: ``"Attention explanation"``)
    """
    return _page(title, _document_sections(tokens, attention, codes, predicted, k=k, scores=scores,
                                           code_descriptions=code_descriptions, true_codes=true_codes, level=2))


def explanations_html(documents: Sequence[Mapping[str, Any]], *, title: str = "Attention explanations") -> str:
    """One HTML page explaining several documents, one ``<article>`` each.

    Args:
        documents (Sequence[Mapping[str, Any]]): per document, a mapping with a ``heading`` (e.g.
            its admission id) and the arguments of :func:`explanation_html` by name (``tokens``,
            ``attention``, ``codes``, ``predicted``, and optionally ``k``, ``scores``,
            ``code_descriptions``, ``true_codes``).
        title (str, optional): the page title. (default: ``"Attention explanations"``)
    """
    body = []
    for number, document in enumerate(documents):
        options = dict(document)
        heading = options.pop("heading", f"document {number}")
        unknown = set(options) - {"tokens", "attention", "codes", "predicted", "k", "scores", "code_descriptions",
                                  "true_codes"}
        if unknown:
            raise ValueError(f"`documents[{number}]` has unknown keys {sorted(unknown)}")
        options.setdefault("k", 10)
        for key in ("scores", "code_descriptions", "true_codes"):
            options.setdefault(key, None)
        body.append(f"<article><h2>{html.escape(str(heading), quote=True)}</h2>")
        body += _document_sections(**options, level=3)
        body.append("</article>")
    return _page(title, body)


def write_explanation_html(path: str | Path, *args, **kwargs) -> Path:
    """Write :func:`explanation_html` (same arguments after ``path``) to ``path`` (UTF-8); returns it.

    Args:
        path (str or Path): the file to write (its folder is created).
        *args: the positional arguments of :func:`explanation_html`.
        **kwargs: its keyword arguments.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(explanation_html(*args, **kwargs), encoding="utf-8")
    return path
