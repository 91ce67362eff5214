"""Explanation output: top tokens per predicted code as rows, a Markdown table, an HTML page."""

from __future__ import annotations

import html.parser
import subprocess
import sys

import pytest
import torch

from gattn.explain import explanation_html, explanations_html, format_table, top_tokens, write_explanation_html

TOKENS = ["pt", "with", "<b>chf</b>", "and", "uti", "&", "chf"]
CODES = ["428.0", "599.0", "401.9"]
# per-code attention over the 7 tokens; column sums are 1
ATTENTION = torch.tensor([
    [0.05, 0.10, 0.30],
    [0.05, 0.10, 0.10],
    [0.40, 0.05, 0.10],
    [0.05, 0.05, 0.10],
    [0.05, 0.50, 0.20],
    [0.05, 0.10, 0.10],
    [0.35, 0.10, 0.10],
])


def test_top_tokens_rows():
    rows = top_tokens(TOKENS, ATTENTION, CODES, [1, 0], k=2, scores=torch.tensor([0.9, 0.8, 0.1]))
    assert [(r["code"], r["rank"], r["token"], r["position"]) for r in rows] == [
        ("599.0", 1, "uti", 4),
        ("599.0", 2, "pt", 0),  # ties at 0.10 broken by position
        ("428.0", 1, "<b>chf</b>", 2),
        ("428.0", 2, "chf", 6),
    ]
    assert rows[0]["weight"] == pytest.approx(0.5) and rows[0]["score"] == pytest.approx(0.8)
    assert rows[0]["description"] is None


def test_predicted_as_mask_shared_attention_and_short_documents():
    mask = torch.tensor([False, True, True])
    rows = top_tokens(TOKENS, ATTENTION[:, :1], CODES, mask, k=10, code_descriptions=["a", "b", "c"])
    assert len(rows) == 2 * len(TOKENS)  # k larger than the note: every token once per code
    assert {r["code"] for r in rows} == {"599.0", "401.9"} and rows[0]["description"] == "b"
    assert rows[0]["token"] == "<b>chf</b>"  # the shared column 0 ranks 'chf' first for both
    assert top_tokens([], torch.zeros(0, 3), CODES, [0]) == []


def test_format_table():
    rows = top_tokens(TOKENS, ATTENTION, CODES, [2], k=1)
    assert format_table(rows).splitlines() == [
        "| code | rank | position | token | weight |",
        "|---|---|---|---|---|",
        "| 401.9 | 1 | 0 | pt | 0.3000 |",
    ]
    piped = format_table([{"code": "a|b", "token": "x", "weight": 0.5}])
    assert "a\\|b" in piped


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.marks, self.in_mark, self.text, self.tags = [], False, [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "mark":
            self.in_mark = True
            self.marks.append("")

    def handle_endtag(self, tag):
        if tag == "mark":
            self.in_mark = False

    def handle_data(self, data):
        self.text.append(data)
        if self.in_mark:
            self.marks[-1] += data


def test_html_highlights_top_tokens_and_escapes_text(tmp_path):
    page = explanation_html(
        TOKENS, ATTENTION, CODES, [0], k=2, scores=[0.91, 0.2, 0.1],
        code_descriptions=["Heart failure <unspecified>", "UTI", "HTN"], title="Note <1>",
    )
    assert "<b>chf</b>" not in page and "&lt;b&gt;chf&lt;/b&gt;" in page
    assert "<unspecified>" not in page and "Note &lt;1&gt;" in page
    assert " &amp; " in page
    parser = _Collector()
    parser.feed(page)
    assert "b" not in parser.tags and "script" not in parser.tags  # no markup from the note
    assert parser.marks == ["<b>chf</b>", "chf"]  # the top-2 tokens of 428.0, in note order
    assert "p = 0.910" in page and "599.0" not in page
    path = write_explanation_html(tmp_path / "out" / "doc0.html", TOKENS, ATTENTION, CODES, [0], k=2)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<mark") == 2
    assert "No code predicted" in explanation_html(TOKENS, ATTENTION, CODES, torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attention": ATTENTION[:5]}, ValueError, r"`attention` must be \[L=7, C=3\]"),
        ({"predicted": [3]}, ValueError, "`predicted` holds code index 3"),
        ({"predicted": torch.tensor([True, False])}, ValueError, r"`predicted` as a bool mask must have shape \[3\]"),
        ({"predicted": torch.tensor([0.5])}, TypeError, "`predicted` must be code indices"),
        ({"k": 0}, ValueError, "`k` must be a positive int"),
        ({"scores": [0.1]}, ValueError, r"`scores` must hold one entry per code \(3\)"),
        ({"attention": ATTENTION.long()}, TypeError, "`attention` must be floating point"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = {"tokens": TOKENS, "attention": ATTENTION, "codes": CODES, "predicted": [0], **kwargs}
    with pytest.raises(error, match=match):
        top_tokens(**args)
    with pytest.raises(error, match=match):
        explanation_html(**args)


def test_explain_and_losses_stay_light():
    """No pandas, scikit-learn, Lightning, ... on import beyond what PyG itself imports (PyG's
    package import pulls pandas in: that is PyG's dependency, not ours)."""
    code = (
        "import sys, torch_geometric; before = set(sys.modules); "
        "import gattn.explain, gattn.losses, gattn.nn.transicd, gattn.nn.label_attention; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'lightning', 'optuna', 'matplotlib', 'gattn.datasets') "
        "if m in sys.modules and m not in before))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_several_documents_on_one_page_with_true_codes():
    rows = top_tokens(TOKENS, ATTENTION, CODES, [0, 1], k=1, true_codes=torch.tensor([True, False, False]))
    assert [r["true"] for r in rows] == [True, False]
    assert "| code | true | rank |" in format_table(rows) and "| 428.0 | yes | 1 |" in format_table(rows)
    first = dict(tokens=TOKENS, attention=ATTENTION, codes=CODES, predicted=[0], k=2, true_codes=[0])
    second = dict(tokens=TOKENS[:3], attention=ATTENTION[:3], codes=CODES, predicted=[], heading="note <2>")
    page = explanations_html([{"heading": "admission 1", **first}, second], title="two")
    parser = _Collector()
    parser.feed(page)
    assert parser.tags.count("article") == 2 and parser.marks == ["<b>chf</b>", "chf"]
    assert "note &lt;2&gt;" in page and "No code predicted" in page and ", a true code" in page
    with pytest.raises(ValueError, match=r"`documents\[0\]` has unknown keys \['colour'\]"):
        explanations_html([{**first, "colour": "red"}])
    with pytest.raises(ValueError, match="`true_codes` holds code index 5"):
        explanations_html([{**first, "true_codes": [5]}])
    with pytest.raises(ValueError, match=r"`attention` must be \[L=3"):  # checked even with no code chosen
        explanations_html([{**second, "attention": ATTENTION}])
