"""The MIMIC-III pipelines (``transicd``, ``label_attention``) end to end on the invented
MIMIC-III the tests write in the real schema: quick runs, the metrics against scikit-learn on
the best checkpoint, the explanation files, the ``gattn`` command (train and tune), the LDAM
margins and the errors."""

from __future__ import annotations

import html.parser
import json

import optuna
import pytest
import torch

from gattn import cli
from gattn.datasets.mimic import write_mimic_fixture
from gattn.pipelines import ConfigError, get_pipeline, load_checkpoint, make_config, run
from gattn.pipelines._mimic import ldam_max_margin, mimic_paths

FAMILIES = ("transicd", "label_attention")
MODEL = {"transicd": dict(layers=1, heads=2), "label_attention": dict(hidden=16)}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_mimic_fixture(tmp_path_factory.mktemp("mimic"), num_admissions=40, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def quick(fx, cache, family, **extra):
    """A few seconds of training: 8 labels, 16-dimensional word vectors, 2 epochs."""
    return {**dict(mimic_dir=str(fx.mimic_dir), splits_dir=str(fx.splits_dir), cache_dir=str(cache), top_codes=8,
                   min_count=1, embedding_dim=16, embedding_epochs=2, epochs=2, batch_size=4, progress=False,
                   threads=1, explain=2, explain_codes=2, explain_tokens=3), **MODEL[family], **extra}


class _Marks(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.marks, self.articles = 0, 0

    def handle_starttag(self, tag, attrs):
        self.marks += tag == "mark"
        self.articles += tag == "article"


@pytest.mark.parametrize("family", FAMILIES)
def test_quick_run_metrics_match_sklearn_on_the_best_checkpoint(family, fx, cache, tmp_path):
    from sklearn.metrics import f1_score, roc_auc_score

    pipeline = get_pipeline(family)
    config = make_config(pipeline, quick(fx, cache, family))
    result = run(pipeline, config, tmp_path / "run")
    metrics = result.metrics
    for name in ("rocauc_micro", "rocauc_macro", "f1_micro", "f1_macro", "f1_macro_pr", "precision_at_5",
                 "precision_at_8"):
        assert 0.0 <= metrics[f"test_{name}"] <= 1.0 and f"val_{name}" in metrics
    assert "test_precision_at_15" not in metrics  # 8 labels: P@15 would count absent labels
    assert set(result.chance) >= {"test_rocauc_micro", "test_f1_micro"}

    data = pipeline.prepare(config)
    model = pipeline.build_model(config, data, pipeline.splits(config, data)[0])
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    test = data.icd.test
    with torch.no_grad():
        logits, attention = pipeline.token_attention(model, {"input_ids": test.token_ids, "ptr": test.ptr})
    y = test.multi_hot().numpy()
    assert logits.shape == y.shape and attention.size(0) == test.token_ids.numel()
    assert metrics["test_rocauc_micro"] == pytest.approx(roc_auc_score(y.ravel(), logits.numpy().ravel()), abs=1e-6)
    assert metrics["test_f1_micro"] == pytest.approx(f1_score(y, logits.numpy() > 0, average="micro",
                                                             zero_division=0), abs=1e-6)

    table = (tmp_path / "run" / "explanations.md").read_text(encoding="utf-8")
    assert result.files["explanation table"].endswith("explanations.md")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| document")]
    documents = {line.split("|")[1].strip() for line in rows}
    assert len(documents) == 2 and len(rows) <= 2 * 2 * 3  # documents x codes x tokens
    assert documents <= {str(h) for h in test.hadm_ids.tolist()}
    page = _Marks()
    page.feed((tmp_path / "run" / "explanations.html").read_text(encoding="utf-8"))
    assert page.articles == 2 and 0 < page.marks <= 2 * 2 * 3


def test_explanations_follow_the_model_attention(fx, cache, tmp_path):
    """The explained tokens are the top-weighted tokens of the model's own attention."""
    from gattn.pipelines._mimic import explain_documents

    pipeline = get_pipeline("transicd")
    config = make_config(pipeline, quick(fx, cache, "transicd", explain=1, explain_codes=1, explain_tokens=2))
    data = pipeline.prepare(config)
    torch.manual_seed(0)
    model = pipeline.build_model(config, data, pipeline.splits(config, data)[0]).eval()
    rows, documents = explain_documents(pipeline, config, data, model)
    test = data.icd.test
    first = int(torch.nonzero(test.lengths > 0)[0])
    ids = test.token_ids[test.ptr[first]: test.ptr[first + 1]]
    with torch.no_grad():
        logits, attention = model(ids, torch.tensor([0, ids.numel()]), return_attention=True)
    code = int(logits[0].argmax())  # the most probable code is explained first
    weights = attention[:, code]
    top = torch.sort(weights, descending=True, stable=True).indices[:2].tolist()
    assert [r["position"] for r in rows] == top
    assert [r["token"] for r in rows] == [data.icd.vocab.words[int(ids[p])] for p in top]
    assert rows[0]["code"] == data.icd.codes[code] and rows[0]["true"] == bool(test.multi_hot()[first, code])
    assert documents[0]["heading"] == f"admission {int(test.hadm_ids[first])}"


def test_label_attention_with_time_series(fx, cache, tmp_path):
    pipeline = get_pipeline("label_attention")
    config = make_config(pipeline, quick(fx, cache, "label_attention", time_series=True, fusion="concat",
                                         explain=0))
    assert config.max_hours == 48  # the default filled in by resolve()
    result = run(pipeline, config, tmp_path / "run")
    assert 0.0 <= result.metrics["test_rocauc_micro"] <= 1.0 and "explanation table" not in result.files
    data = pipeline.prepare(config)
    train = data.icd.train
    observed = train.series[train.series_mask]
    assert observed.mean().abs() < 0.2  # standardised with the training statistics
    with pytest.raises(ConfigError, match="--max-hours needs --time-series"):
        make_config(pipeline, quick(fx, cache, "label_attention", max_hours=12))


def test_cli_train(fx, cache, tmp_path, capsys):
    out = tmp_path / "train.json"
    args = ["train", "transicd", "--mimic-dir", str(fx.mimic_dir), "--splits-dir", str(fx.splits_dir),
            "--cache-dir", str(cache), "--top-codes", "8", "--min-count", "1", "--embedding-dim", "16",
            "--embedding-epochs", "2", "--epochs", "1", "--batch-size", "4", "--layers", "1", "--heads", "2",
            "--threads", "1", "--explain", "1", "--no-progress", "--runs-dir", str(tmp_path / "runs"),
            "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "top tokens per predicted code" in printed and "test_f1_macro_pr" in printed
    assert "explanation page: " in printed and "explanation table: " in printed
    run_dir = json.loads(out.read_text())["run_dir"]
    assert (tmp_path / "runs" / "transicd").joinpath(run_dir).joinpath("explanations.html").is_file()


@pytest.mark.parametrize("family", [pytest.param("transicd", marks=pytest.mark.slow), "label_attention"])
def test_cli_tune(family, fx, cache, tmp_path, capsys):
    model = ["--layers", "1", "--heads", "2"] if family == "transicd" else ["--time-series"]
    args = ["tune", family, "--mimic-dir", str(fx.mimic_dir), "--splits-dir", str(fx.splits_dir),
            "--cache-dir", str(cache), "--top-codes", "8", "--min-count", "1", "--embedding-dim", "16",
            "--embedding-epochs", "2", "--epochs", "1", "--batch-size", "4", *model, "--threads", "1",
            "--explain", "0", "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--trials", "2", "--no-plots"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "best trial" in printed and ("fusion" in printed if family == "label_attention" else "heads" in printed)
    assert (tmp_path / "runs" / family / "study.db").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_search_space_gives_valid_configs(family, fx, cache):
    pipeline = get_pipeline(family)
    config = make_config(pipeline, quick(fx, cache, family))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = pipeline.search_space(study.ask(), config)
        tuned = make_config(pipeline, {**quick(fx, cache, family), **params})
        if family == "transicd":
            assert tuned.embedding_dim % tuned.heads == 0


def test_ldam_margins_are_the_authors_unnormalised_ones(fx, cache):
    pipeline = get_pipeline("transicd")
    config = make_config(pipeline, quick(fx, cache, "transicd"))
    data = pipeline.prepare(config)
    counts = data.icd.train_label_counts.double()
    loss = pipeline.loss(config, data)
    expected = 3.0 * counts[counts > 0] ** -0.25
    torch.testing.assert_close(loss.margins[counts > 0].double(), expected, rtol=1e-5, atol=1e-6)
    assert ldam_max_margin(torch.tensor([16, 1, 0]), 3.0, False) == pytest.approx(3.0)
    assert ldam_max_margin(torch.tensor([16, 81, 0]), 3.0, False) == pytest.approx(1.5)
    assert ldam_max_margin(torch.tensor([16, 81]), 0.5, True) == 0.5
    normalised = pipeline.loss(make_config(pipeline, quick(fx, cache, "transicd", ldam_normalise=True)), data)
    assert float(normalised.margins.max()) == pytest.approx(3.0)


def test_missing_folders_name_the_folder_and_the_option(fx, tmp_path):
    pipeline = get_pipeline("transicd")
    with pytest.raises(FileNotFoundError, match=r"mimic3/mimic-iii-clinical-database-1\.4 not found.*--mimic-dir"):
        mimic_paths(make_config(pipeline, {"root": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match=r"CAML splits directory .*nowhere not found \(given by --splits-dir"):
        mimic_paths(make_config(pipeline, {"mimic_dir": str(fx.mimic_dir), "splits_dir": str(tmp_path / "nowhere")}))


def test_header_only_notes_and_missing_notes_are_clear_errors(tmp_path, capsys):
    fx = write_mimic_fixture(tmp_path / "fx", num_admissions=40, seed=5)
    pipeline = get_pipeline("transicd")
    # an admission of the splits without a discharge summary: raise (naming the option), or drop it
    no_note = next(a["HADM_ID"] for a in fx.admissions if all(
        n["HADM_ID"] != a["HADM_ID"] or n["CATEGORY"] != "Discharge summary" or n["ISERROR"] == "1"
        for n in fx.notes))
    splits = tmp_path / "splits"
    splits.mkdir()
    for f in fx.splits_dir.iterdir():
        text = f.read_text()
        splits.joinpath(f.name).write_text(text + f"{no_note}\n" if f.name == "test_50_hadm_ids.csv" else text)
    values = {"mimic_dir": str(fx.mimic_dir), "splits_dir": str(splits), "cache_dir": str(tmp_path / "cache"),
              "embedding_dim": 8, "embedding_epochs": 1, "min_count": 1}
    with pytest.raises(ValueError, match=r"only 34 distinct codes .* a smaller --top-codes K"):
        pipeline.prepare(make_config(pipeline, values))
    values["top_codes"] = 8
    with pytest.raises(ValueError, match="--missing-notes drop or empty"):
        pipeline.prepare(make_config(pipeline, values))
    kept = pipeline.prepare(make_config(pipeline, {**values, "missing_notes": "empty"})).icd.test
    assert kept.hadm_ids[-1] == no_note and kept.lengths[-1] == 0
    # the demo's NOTEEVENTS: a header, no row
    notes = fx.mimic_dir / "NOTEEVENTS.csv"
    notes.write_text(notes.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    args = ["train", "label_attention", "--mimic-dir", str(fx.mimic_dir), "--splits-dir", str(fx.splits_dir),
            "--cache-dir", str(tmp_path / "cache2"), "--top-codes", "8", "--no-progress",
            "--runs-dir", str(tmp_path / "runs")]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "label_attention learns from discharge summaries, and NOTEEVENTS in" in err and "holds none" in err
    with pytest.raises(ValueError, match=r"NOTEEVENTS in .* holds none \(NOTEEVENTS.csv: 0 rows"):
        pipeline.prepare(make_config(pipeline, {**values, "splits_dir": str(fx.splits_dir),
                                                "cache_dir": str(tmp_path / "cache3")}))



@pytest.mark.parametrize("family", FAMILIES)
def test_config_files_are_valid_and_hold_the_papers_settings(family):
    from pathlib import Path

    from gattn.pipelines.config import read_config_file

    values = read_config_file(Path(__file__).resolve().parents[2] / "configs" / f"{family}_mimic3-50.yaml")
    assert values.pop("pipeline") == family
    config = make_config(get_pipeline(family), values)
    assert (config.setting, config.max_length, config.embedding_dim, config.lr, config.batch_size,
            config.epochs) == ("50", 2500, 128, 1e-3, 8, 30)
    if family == "transicd":  # Biswas et al.: frozen CBOW vectors, 2 layers, 8 heads, dropout 0.1, LDAM
        assert (config.layers, config.heads, config.dropout, config.freeze_embeddings, config.loss,
                config.ldam_c, config.ldam_normalise) == (2, 8, 0.1, True, "ldam", 3.0, False)
        # the authors' code: AdamW (torch's default decay), the last epoch evaluated
        assert (config.optimizer, config.weight_decay, config.selection) == ("adamw", 0.01, "last")
    else:
        assert config.time_series and config.max_hours == 48 and config.loss == "bce"


def test_frozen_embeddings_need_word_vectors():
    from types import SimpleNamespace

    from gattn.pipelines._mimic import MimicData

    pipeline = get_pipeline("transicd")
    data = MimicData(SimpleNamespace(embeddings=None))
    with pytest.raises(ConfigError, match="--freeze-embeddings: the training notes gave no word2vec vectors"):
        pipeline.word_vectors(make_config(pipeline, {}), data)
    assert pipeline.word_vectors(make_config(pipeline, {"freeze_embeddings": False}), data) is None


def test_selection_last_trains_without_validation_and_cannot_be_tuned(fx, cache, tmp_path):
    pipeline = get_pipeline("label_attention")
    config = make_config(pipeline, quick(fx, cache, "label_attention", selection="last", explain=0, epochs=3))
    result = run(pipeline, config, tmp_path / "run")
    assert result.metrics["epochs"] == 3 and not any(key.startswith("val_") for key in result.metrics)
    assert "test_f1_macro" in result.metrics
    with pytest.raises(ConfigError, match="gattn tune compares trials on the validation split"):
        pipeline.search_space(optuna.trial.FixedTrial({}), config)


def test_results_script_on_a_demo_like_folder(tmp_path, monkeypatch, capsys):
    """benchmarks/mimic_results.py --demo: each pipeline's stopping message, then the label
    statistics of the folder's admissions in the CAML splits."""
    from benchmarks import mimic_results

    fx = write_mimic_fixture(tmp_path / "fx", num_admissions=20, seed=2, tables=(
        "ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "NOTEEVENTS", "D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"))
    notes = fx.mimic_dir / "NOTEEVENTS.csv"
    notes.write_text(notes.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    monkeypatch.setattr("sys.argv", ["mimic_results.py", "--demo", str(fx.mimic_dir), "--splits-dir",
                                     str(fx.splits_dir), "--cache-dir", str(tmp_path / "cache"), "--top-codes", "8",
                                     "--runs-dir", str(tmp_path / "runs")])
    mimic_results.main()
    out = capsys.readouterr().out
    assert "transicd stops with: ValueError: transicd learns from discharge summaries" in out
    assert "label_attention stops with: ValueError:" in out
    assert "time series: MIMIC-III table CHARTEVENTS: none of CHARTEVENTS.csv" in out
    train = set(fx.splits["train_50"])
    assignments = sum(1 for hadm, _, _, code in fx.codes if hadm in train)  # every code, not only the top 8
    lines = [line.split() for line in out.splitlines() if line.startswith("train ")]
    assert int(lines[0][1]) == len(train) and int(lines[0][2]) == len(train)
    assert int(lines[0][3]) <= assignments and int(lines[0][5]) == 0  # no note token
