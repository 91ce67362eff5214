"""ICD coding of MIMIC-III discharge summaries (top-50 codes) with a configuration of configs/,
then the explanations of a few test notes.

python examples/mimic_icd_coding.py transicd /path/to/mimic-iii-clinical-database-1.4 ../shared/data/mimic3/caml-splits
python examples/mimic_icd_coding.py label_attention /path/to/mimic-iii-clinical-database-1.4
python examples/mimic_icd_coding.py transicd --fixture     # a quick run on invented MIMIC-III notes

The same as ``gattn train --config configs/<pipeline>_mimic3-50.yaml --mimic-dir DIR
--splits-dir DIR`` (transicd: the TransICD paper's settings; label_attention: notes and the
first 48 hours of vital signs and labs). Without folders they are looked for under the data
root ($GATTN_DATA/mimic3). The run folder holds ``explanations.md`` and
``explanations.html``: the tokens each predicted code attended to most.
"""

import sys
import tempfile
from pathlib import Path

from gattn.datasets.mimic import write_mimic_fixture
from gattn.pipelines import get_pipeline, make_config, new_run_dir
from gattn.pipelines.config import read_config_file
from gattn.pipelines.results import format_results

name = sys.argv[1] if len(sys.argv) > 1 else "transicd"
pipeline = get_pipeline(name)
values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / f"{name}_mimic3-50.yaml")
values.pop("pipeline")
if sys.argv[2:] == ["--fixture"]:  # invented notes: 20 codes, 5 epochs, a few minutes on a CPU
    fx = write_mimic_fixture(tempfile.mkdtemp(prefix="mimic-fixture-"), num_admissions=300)
    values.update(mimic_dir=str(fx.mimic_dir), splits_dir=str(fx.splits_dir), top_codes=20, min_count=1, epochs=5,
                  threads=1)
elif sys.argv[2:]:
    values.update(mimic_dir=sys.argv[2], splits_dir=sys.argv[3] if len(sys.argv) > 3 else None)
config = make_config(pipeline, values)
print(pipeline.describe(config))
result = pipeline.run(config, new_run_dir("runs/examples", pipeline, config))
print(format_results(result.metrics, result.chance))
print("explanations:", result.files.get("explanation table"), result.files.get("explanation page"))
