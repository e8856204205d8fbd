"""The face-profiling data engine: fitted photos -> rotated, re-rendered views with exact 3-D labels
(`facerecon dataset build`; docs/dataset.md)."""

from .build import BuildConfig, BuildSummary, build_dataset, list_photos, sample_rotations, split_of
from .profile import ProfiledView, Profiler, SourceView, mirror_map, vertex_visibility
from .store import SAMPLE_KEYS, load_sample, read_manifest

__all__ = ["SAMPLE_KEYS", "BuildConfig", "BuildSummary", "ProfiledView", "Profiler", "SourceView", "build_dataset",
           "list_photos", "load_sample", "mirror_map", "read_manifest", "sample_rotations", "split_of",
           "vertex_visibility"]
