"""Vocabulary, encoding of cleaned notes to token ids, and word2vec embeddings.

* :func:`build_vocabulary`: the words of the *training* notes that occur in at least
  ``min_count`` of them (CAML's rule: document frequency, ``min_count = 3``). Index 0 is
  ``<pad>``, 1 is ``<unk>``; then words by decreasing document frequency, ties by the word.
* :meth:`Vocabulary.encode`: cleaned texts (space separated words) to ragged token ids, each
  document truncated to its first ``max_length`` words (2,500 in CAML and TransICD); a word
  outside the vocabulary becomes ``<unk>``.
* :func:`train_word2vec`: gensim's word2vec (CBOW, CAML's choice; gensim's defaults otherwise:
  window 5, 5 negative samples) trained on the training notes only, seeded, one worker by
  default so the result is reproducible. gensim cuts a "sentence" at 10,000 words: longer notes
  train on their first 10,000. Rows of the matrix follow the vocabulary; each word's vector
  is scaled to unit length (as CAML does), ``<pad>`` is zeros and ``<unk>`` a random unit
  vector drawn from the seed.

gensim (the ``pipelines`` extra) is used rather than a hand-written trainer: it is the
implementation the ICD-coding papers used, it is maintained, and it builds for Python 3.11
with numpy 2 (gensim >= 4.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

__all__ = ["PAD", "UNK", "Vocabulary", "build_vocabulary", "split_words", "train_word2vec"]

PAD, UNK = 0, 1
_SPECIALS = ["<pad>", "<unk>"]


def split_words(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Cleaned texts -> (all words, flat; document index of each word). Empty texts give none.

    Args:
        texts (pyarrow.Array): cleaned texts.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lists = pc.split_pattern(pc.fill_null(texts, ""), " ")
    words = pc.list_flatten(lists)
    doc = np.asarray(pc.list_parent_indices(lists))
    nonempty = pc.greater(pc.binary_length(words), 0)
    if not pc.all(nonempty).as_py():
        doc = doc[np.asarray(nonempty)]
        words = words.filter(nonempty)
    return words, doc


@dataclass
class Vocabulary:
    """Index <-> word. ``words[0] = "<pad>"``, ``words[1] = "<unk>"``.

    Attributes:
        words (list[str]): the words, by index.
        doc_freq (np.ndarray): [V] training documents containing each word (0 for the two specials).
        term_freq (np.ndarray): [V] occurrences in the training documents (0 for the specials).
    """

    words: list[str]
    doc_freq: np.ndarray
    term_freq: np.ndarray

    def __post_init__(self) -> None:
        if self.words[:2] != _SPECIALS:
            raise ValueError(f"a vocabulary starts with {_SPECIALS}, got {self.words[:2]}")
        self._array = pa.array(self.words, type=pa.large_string())

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} entries)"

    def index(self, word: str) -> int:
        found = pc.index_in(pa.array([word], pa.large_string()), value_set=self._array)[0].as_py()
        return UNK if found is None else int(found)

    def lookup(self, words: pa.Array) -> np.ndarray:
        """Words -> int64 ids (``UNK`` for the unknown)."""
        if words.type != pa.large_string():
            words = pc.cast(words, pa.large_string())
        return np.asarray(pc.fill_null(pc.index_in(words, value_set=self._array), UNK), dtype=np.int64)

    def encode(self, texts: pa.Array | pa.ChunkedArray, max_length: int | None = None,
               chunk_size: int = 2_000) -> tuple[Tensor, Tensor]:
        """Cleaned texts -> ragged token ids, the first ``max_length`` words of each.

        Returns:
            ``(token_ids [N] int64, ptr [B+1] int64)``: document ``b`` is
            ``token_ids[ptr[b]:ptr[b+1]]``.
        """
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"`max_length` must be a positive int or None, got {max_length!r}")
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        ids, lengths = [], []
        for start in range(0, len(texts), chunk_size):
            part = texts.slice(start, chunk_size)
            words, doc = split_words(part)
            count = np.bincount(doc, minlength=len(part))
            if max_length is not None:
                first = np.zeros(len(part) + 1, dtype=np.int64)
                np.cumsum(count, out=first[1:])
                keep = np.arange(doc.size) - first[doc] < max_length
                words = words.filter(pa.array(keep))
                count = np.minimum(count, max_length)
            ids.append(self.lookup(words))
            lengths.append(count)
        length = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        ptr = np.zeros(length.size + 1, dtype=np.int64)
        np.cumsum(length, out=ptr[1:])
        values = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        return torch.from_numpy(values), torch.from_numpy(ptr)

    def to_table(self) -> pa.Table:
        return pa.table({"WORD": self._array, "DOC_FREQ": self.doc_freq, "TERM_FREQ": self.term_freq})

    @classmethod
    def from_table(cls, table: pa.Table) -> Vocabulary:
        return cls(table.column("WORD").to_pylist(), table.column("DOC_FREQ").to_numpy(),
                   table.column("TERM_FREQ").to_numpy())


def build_vocabulary(texts: Iterable[pa.Array | pa.ChunkedArray], min_count: int = 3,
                     max_size: int | None = None) -> Vocabulary:
    """The vocabulary of the (training) ``texts``: words in at least ``min_count`` documents.

    Args:
        texts (Iterable[pa.Array | pa.ChunkedArray]): cleaned texts, given as one or more arrays
            (e.g. one per parquet row group).
        min_count (int, optional): minimum document frequency (default 3, CAML's).
        max_size (int, optional): keep at most this many words, the most frequent (default: no limit).
    """
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"`min_count` must be a positive int, got {min_count!r}")
    if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"`max_size` must be a positive int or None, got {max_size!r}")
    doc_freq = pd.Series(dtype=np.int64)
    term_freq = pd.Series(dtype=np.int64)
    for part in texts:
        words, doc = split_words(part)
        if len(words) == 0:
            continue
        pairs = pa.table({"doc": doc, "word": words}).group_by(["doc", "word"]).aggregate([("word", "count")])
        df_part = pairs.group_by("word").aggregate([("doc", "count")]).to_pandas().set_index("word")["doc_count"]
        tf_part = pairs.group_by("word").aggregate([("word_count", "sum")]).to_pandas().set_index("word")[
            "word_count_sum"]
        doc_freq = doc_freq.add(df_part, fill_value=0)
        term_freq = term_freq.add(tf_part, fill_value=0)
    kept = doc_freq[doc_freq >= min_count]
    order = sorted(kept.items(), key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        order = order[:max_size]
    words = [w for w, _ in order]
    return Vocabulary(
        _SPECIALS + words,
        np.r_[0, 0, np.array([c for _, c in order], dtype=np.int64)].astype(np.int64),
        np.r_[0, 0, term_freq.reindex(words).to_numpy(dtype=np.int64) if words else np.zeros(0)].astype(np.int64),
    )


class _Sentences:
    """A re-iterable corpus for gensim: each document's words, from a factory of text arrays."""

    def __init__(self, texts: Callable[[], Iterator[pa.Array]]):
        self.texts = texts

    def __iter__(self) -> Iterator[list[str]]:
        for part in self.texts():
            for text in part.to_pylist():
                if text:
                    yield text.split(" ")


def train_word2vec(
    texts: Callable[[], Iterator[pa.Array]],
    vocabulary: Vocabulary,
    dim: int = 100,
    *,
    epochs: int = 5,
    window: int = 5,
    skip_gram: bool = False,
    negative: int = 5,
    seed: int = 0,
    workers: int = 1,
) -> Tensor:
    """Word2vec vectors of the vocabulary's words, trained on ``texts`` (module docstring).

    Args:
        texts (Callable[[], Iterator[pa.Array]]): a function returning a fresh iterator of
            cleaned-text arrays (the training notes) at each call; gensim passes over the corpus
            ``epochs + 1`` times.
        vocabulary (Vocabulary): rows of the result follow it; only its words are trained.
        dim (int, optional): vector size (default 100, CAML's; TransICD used 128).
        epochs (int, optional): gensim's ``epochs``. (default: ``5``)
        window (int, optional): gensim's ``window``. (default: ``5``)
        skip_gram (bool, optional): gensim's ``sg``. (default: ``False``)
        negative (int, optional): gensim's ``negative``. (default: ``5``)
        seed (int, optional): gensim's ``seed``, and the ``<unk>`` vector's. (default: ``0``)
        workers (int, optional): gensim threads (default 1: reproducible; more is faster but not deterministic).

    Returns:
        ``[len(vocabulary), dim]`` float32.
    """
    from gensim.models import Word2Vec

    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"`dim` must be a positive int, got {dim!r}")
    words = vocabulary.words[2:]
    out = np.zeros((len(vocabulary), dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    unk = rng.standard_normal(dim).astype(np.float32)
    out[UNK] = unk / np.linalg.norm(unk)
    if not words:
        return torch.from_numpy(out)
    corpus = _Sentences(texts)
    model = Word2Vec(vector_size=dim, window=window, min_count=1, sg=int(skip_gram), negative=negative,
                     seed=seed, workers=workers, epochs=epochs)
    model.build_vocab_from_freq({w: int(c) for w, c in zip(words, vocabulary.term_freq[2:])})
    total_words = int(vocabulary.term_freq[2:].sum())
    num_docs = sum(1 for _ in corpus)
    model.train(corpus, total_examples=num_docs, total_words=total_words, epochs=epochs)
    vectors = model.wv[words].astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out[2:] = vectors / np.maximum(norms, 1e-12)
    return torch.from_numpy(out)
