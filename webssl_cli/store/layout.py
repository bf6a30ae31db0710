"""Where every file of an output folder lives, for both output formats.

One place decides the names, so the writers, the commit protocol, the readers and
``webssl status`` can never disagree. All unit files use the zero-padded ``Unit.id``,
so a plain sorted listing is plan order (what embedding-reader relies on).
"""
from __future__ import annotations

import errno
import re
from pathlib import Path

from ..errors import UsageError

FORMATS = ("parquet", "npy")
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                 errno.ENAMETOOLONG}
METADATA_DIR = "metadata"          # npy format: row-aligned key/source parquet per unit
_SLUG_OK = re.compile(r"^[a-z][a-z0-9_]*$")
_MANIFEST_OK = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
# names a manifest folder may not take: data files (part-*.parquet) and the npy layout's
# folders (metadata/, one per feature: cls, patch_mean, patches, layers_K, patch_grid_N)
_DATA_NAME = re.compile(r"^(part-.*|metadata|cls|patch_mean|patches|layers_\d+|patch_grid_\d+)$",
                        re.IGNORECASE)


def feature_slug(feature: str) -> str:
    """Safe column/folder name of a feature: ``patch_grid:4`` -> ``patch_grid_4``.

    The single mapping used for parquet column names and npy folder names.
    """
    slug = feature.strip().lower().replace(":", "_")
    if not _SLUG_OK.match(slug) or slug in (METADATA_DIR, "key", "source", "json"):
        raise UsageError(f"feature name {feature!r} cannot be used as an output column/folder "
                         f"name (becomes {slug!r}); use e.g. cls, patch_mean, patches, "
                         "patch_grid:N or layers:K")
    return slug


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


class OutputLayout:
    """All paths of one output folder ``out_dir`` and its manifest folder."""

    def __init__(self, out_dir: str | Path, manifest_name: str = "_webssl") -> None:
        if not _MANIFEST_OK.match(manifest_name) or manifest_name in (".", ".."):
            raise UsageError(f"manifest name {manifest_name!r} must be a plain folder name "
                             "(letters, digits, '_', '.', '-'), e.g. _webssl")
        if _DATA_NAME.match(manifest_name):
            raise UsageError(f"manifest name {manifest_name!r} would collide with the data files "
                             "of the output folder (part-*.parquet, metadata/ and the npy feature "
                             "folders such as cls/ or layers_4/); choose another name, e.g. _webssl")
        self.out_dir = Path(out_dir)
        self.manifest_name = manifest_name
        self.manifest_dir = self.out_dir / manifest_name

    # -- manifest -----------------------------------------------------------------------
    @property
    def run_config_path(self) -> Path:
        return self.manifest_dir / "run.json"

    @property
    def plan_path(self) -> Path:
        return self.manifest_dir / "plan.json"

    @property
    def done_dir(self) -> Path:
        return self.manifest_dir / "done"

    @property
    def failures_dir(self) -> Path:
        return self.manifest_dir / "failures"

    @property
    def unit_failures_dir(self) -> Path:
        return self.manifest_dir / "failed_units"

    @property
    def claims_dir(self) -> Path:
        return self.manifest_dir / "claims"

    @property
    def commits_dir(self) -> Path:
        return self.manifest_dir / "commits"

    @property
    def staging_dir(self) -> Path:
        return self.manifest_dir / "staging"

    def done_path(self, unit_id: str) -> Path:
        return self.done_dir / f"{unit_id}.json"

    def commit_path(self, unit_id: str) -> Path:
        return self.commits_dir / f"{unit_id}.json"

    def failures_path(self, unit_id: str) -> Path:
        return self.failures_dir / f"{unit_id}.jsonl"

    def unit_failure_path(self, unit_id: str) -> Path:
        return self.unit_failures_dir / f"{unit_id}.json"

    def exists(self) -> bool:
        return self.run_config_path.is_file() or self.plan_path.is_file()

    # -- data files ---------------------------------------------------------------------
    def parquet_path(self, unit_id: str) -> Path:
        return self.out_dir / f"part-{unit_id}.parquet"

    def npy_dir(self, feature: str) -> Path:
        return self.out_dir / feature_slug(feature)

    def npy_path(self, unit_id: str, feature: str) -> Path:
        return self.npy_dir(feature) / f"{unit_id}.npy"

    @property
    def npy_metadata_dir(self) -> Path:
        return self.out_dir / METADATA_DIR

    def npy_metadata_path(self, unit_id: str) -> Path:
        return self.npy_metadata_dir / f"{unit_id}.parquet"

    def feature_files(self, unit_id: str, fmt: str, features: list[str] | tuple[str, ...]) -> list[Path]:
        """The data files a finished unit has in format ``fmt`` (non-empty unit)."""
        if check_format(fmt) == "parquet":
            return [self.parquet_path(unit_id)]
        return [self.npy_path(unit_id, f) for f in features] + [self.npy_metadata_path(unit_id)]

    # -- helpers ------------------------------------------------------------------------
    def rel(self, path: str | Path) -> str:
        """Path relative to ``out_dir`` in POSIX form (what records store)."""
        return Path(path).relative_to(self.out_dir).as_posix()

    def abs(self, rel: str) -> Path:
        return self.out_dir / rel

    def check_out_dir(self) -> None:
        """UsageError unless ``out_dir`` is a folder or can become one (not a file)."""
        for path in (self.out_dir, *self.out_dir.parents):
            if path.exists():
                if not path.is_dir():
                    what = "it" if path == self.out_dir else f"its parent {path}"
                    raise UsageError(f"--out {self.out_dir}: {what} is an existing file, not a "
                                     "folder; choose a folder path for --out")
                return

    def ensure_dirs(self) -> None:
        """Create the manifest folders; UsageError naming --out when that is impossible."""
        self.check_out_dir()
        try:
            for d in (self.manifest_dir, self.done_dir, self.failures_dir, self.claims_dir,
                      self.commits_dir, self.staging_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in _NOT_WRITABLE:
                raise
            raise UsageError(f"--out {self.out_dir}: cannot create the output folder's manifest "
                             f"{self.manifest_dir} ({exc.strerror or exc}); choose a writable "
                             "folder for --out, or fix its permissions") from None
