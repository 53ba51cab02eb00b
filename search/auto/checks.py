"""`auto`'s options checked before anything is written: its outputs against what digit-search keeps and each other."""

from __future__ import annotations

from search.config import AutoSpec
from search.ensemble.outputs import check_outputs
from search.report.build import check_out_dir


def check_auto_options(spec: AutoSpec) -> None:
    """UserError, in one line, for an --out, --save or --report that names the study database, the artifact
    store, another kept file or folder, or one another; --budget and the rest are checked by AutoSpec itself."""
    check_outputs(spec.storage, spec.artifacts, spec.data_dir, out=spec.out, save=spec.save, report=spec.report)
    check_out_dir(spec.report, option="--report")
