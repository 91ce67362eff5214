"""Text cleaning and tokenisation of clinical notes, as in the ICD-coding literature.

The rule (CAML, Mullenbach et al. 2018, whose preprocessing TransICD and most later work
reuse): lowercase the text, split it into words (maximal runs of letters, digits and ``_``:
Python's ``\\w+``), and drop every word without a letter (numbers such as ``2151`` or ``7``,
which also removes the dates inside MIMIC's ``[**2151-7-16**]`` de-identification brackets).
Punctuation separates words and is dropped: ``"s/p CABG x3"`` -> ``s p cabg x3``. A cleaned
note is its words joined by single spaces. Truncation to a maximum length (2,500 words in
CAML and TransICD) is applied later, when documents are encoded (:mod:`.vocab`), so the cached
clean text serves every length.

:func:`clean_texts` cleans a whole pyarrow string array: ASCII notes (nearly all of MIMIC-III)
go through a numba kernel that reads the UTF-8 bytes in place; the others go through Python's
``re`` with the same rule, and :func:`tokenize` is that rule for one string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["clean_text", "clean_texts", "tokenize"]

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """The cleaned words of one text (module docstring for the rule).

    Args:
        text (str): one text.
    """
    return [word for word in _WORD.findall(text.lower()) if any(c.isalpha() for c in word)]


def clean_text(text: str) -> str:
    """One text cleaned: :func:`tokenize`'s words joined by single spaces.

    Args:
        text (str): one text.
    """
    return " ".join(tokenize(text))


# Byte classes for the ASCII kernel: 0 separator, 1 digit or underscore, 2 letter.
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord("0") : ord("9") + 1] = 1
_CLASS[ord("_")] = 1
_CLASS[ord("A") : ord("Z") + 1] = 2
_CLASS[ord("a") : ord("z") + 1] = 2
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A") : ord("Z") + 1] += 32


@numba.njit(cache=True, nogil=True)
def _clean_ascii(data, offsets, byte_class, lower, out, out_offsets):  # pragma: no cover - compiled
    pos = 0
    for i in range(offsets.size - 1):
        out_offsets[i] = pos
        j, end = offsets[i], offsets[i + 1]
        first = True
        while j < end:
            if byte_class[data[j]] == 0:
                j += 1
                continue
            k = j
            letter = False
            while k < end:
                c = byte_class[data[k]]
                if c == 0:
                    break
                letter |= c == 2
                k += 1
            if letter:
                if not first:
                    out[pos] = 32
                    pos += 1
                first = False
                for m in range(j, k):
                    out[pos] = lower[data[m]]
                    pos += 1
            j = k
    out_offsets[offsets.size - 1] = pos
    return pos


def _string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets rebased to 0) of a string array, without copying the bytes."""
    if array.type == pa.large_string():
        offset_type = np.int64
    elif array.type == pa.string():
        offset_type = np.int32
    else:
        raise TypeError(f"expected a string array, got {array.type}")
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64)


def clean_texts(texts: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    """Clean many texts at once (module docstring for the rule); nulls give empty strings.

    Returns a pyarrow ``large_string`` array of the same length.

    Args:
        texts (pyarrow.Array or Sequence[str]): the texts (nulls allowed).
    """
    if not isinstance(texts, pa.Array | pa.ChunkedArray):
        texts = pa.array(list(texts), type=pa.string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], type=pa.string())
    if texts.type not in (pa.string(), pa.large_string()):
        raise TypeError(f"`texts` must hold strings, got {texts.type}")
    texts = pc.fill_null(texts, "")
    data, offsets = _string_buffers(texts)
    out = np.empty(max(int(offsets[-1] - offsets[0]), 1), dtype=np.uint8)
    out_offsets = np.empty(len(texts) + 1, dtype=np.int64)
    used = _clean_ascii(data, offsets, _CLASS, _LOWER, out, out_offsets)
    result = pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(out_offsets), pa.py_buffer(out[:used]))
    ascii_only = pc.string_is_ascii(texts)
    if not pc.all(ascii_only).as_py():
        # Non-ASCII notes: Python's Unicode-aware \w and letter classes, the same rule.
        others = pc.invert(ascii_only)
        cleaned = [clean_text(t) for t in texts.filter(others).to_pylist()]
        result = pc.replace_with_mask(result, others, pa.array(cleaned, type=pa.large_string()))
    return result
