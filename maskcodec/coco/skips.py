"""What the COCO reader leaves out, and why: the skip reasons and ``SkipReport``."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Skip reasons reported by ``iter_mask_batches``.
SKIP_CROWD = "crowd"
SKIP_SHORT_POLYGON = "polygon with fewer than 3 points"
SKIP_ZERO_BOX = "zero-area box"
SKIP_EMPTY = "empty mask"
SKIP_UNKNOWN_IMAGE = "unknown image"
SKIP_BAD_BOX = "missing or non-finite box"
SKIP_BAD_RLE = "RLE size differs from image size"
SKIP_BAD_RLE_COUNTS = "RLE counts do not sum to height x width"
SKIP_BAD_SEGMENTATION = "unreadable segmentation"


@dataclass
class SkipReport:
    """Annotations left out by ``iter_mask_batches``: counts per reason and the first examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[int, str]] = field(default_factory=list)
    max_examples: int = 20

    def add(self, ann_id: int, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append((int(ann_id), reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line, e.g. ``skipped 3 annotations: crowd 2, empty mask 1``."""
        if not self.counts:
            return "skipped 0 annotations"
        parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return f"skipped {self.total} annotation{'s' if self.total != 1 else ''}: {parts}"

