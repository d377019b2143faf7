"""The tidy table of a sweep: one row per (task, time) with every grid coordinate; JSON, CSV, HDF5, plots.

Built from the task records at the end of every run (so a resumed sweep's table holds old and new tasks);
rows are in grid order (models, devices, compensation, variants, chips, times) whatever order the tasks
finished in. Each variant axis is a column named by its dotted path.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core._io import atomic_write, atomic_write_text
from .spec import SweepSpec

__all__ = ["SweepResults", "COLUMNS"]

#: the fixed columns; the variant axes (dotted paths) come after ``variant``
COLUMNS = ("model", "device", "compensation", "variant", "chip", "seed", "time", "time_s", "accuracy",
           "digital_accuracy", "n_test", "task_id")
_GROUP = ("model", "device", "compensation", "variant", "time")


def _cell(v):
    """Variant values: scalars as they are, anything else (lists) as JSON text."""
    return v if isinstance(v, (str, int, float, bool)) else json.dumps(v)


@dataclass
class SweepResults:
    """The rows of a sweep (dicts), its spec, where it lives, and what this run did (``meta``)."""

    spec: SweepSpec
    rows: list
    out: Path | None = None
    meta: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        i = COLUMNS.index("variant") + 1
        return [*COLUMNS[:i], *self.spec.variant_axes, *COLUMNS[i:]]

    @classmethod
    def from_records(cls, spec: SweepSpec, tasks, ids, records: dict, out=None, meta=None) -> "SweepResults":
        rows = []
        for t, tid in zip(tasks, ids):
            rec = records.get(tid)
            if rec is None:
                continue
            var = {p: _cell(v) for p, v in spec.variants[t.variant].items()}
            for label, secs, acc in zip(spec.times, spec.times_s, rec["accuracy"]):
                rows.append({"model": t.model, "device": t.device, "compensation": t.compensation,
                             "variant": t.variant, **var, "chip": t.chip, "seed": t.seed, "time": label,
                             "time_s": secs, "accuracy": acc, "digital_accuracy": rec["digital_accuracy"],
                             "n_test": rec["n_test"], "task_id": tid})
        return cls(spec, rows, None if out is None else Path(out), dict(meta or {}))

    # ------------------------------------------------------------------------------------------- summary
    def summary(self) -> list[dict]:
        """Mean and sample std (ddof 1; 0 for one chip) of accuracy over chips, per grid point and time."""
        groups: dict = {}
        for r in self.rows:
            groups.setdefault(tuple(r[k] for k in _GROUP), []).append(r)
        out = []
        for key, rs in groups.items():
            a = [r["accuracy"] for r in rs]
            m = sum(a) / len(a)
            s = math.sqrt(sum((v - m) ** 2 for v in a) / (len(a) - 1)) if len(a) > 1 else 0.0
            out.append({**dict(zip(_GROUP, key)), "variant_name": self.spec.variant_name(key[3]),
                        "time_s": rs[0]["time_s"], "mean": m, "std": s, "n_chips": len(a),
                        "digital_accuracy": rs[0]["digital_accuracy"]})
        return out

    def table(self) -> str:
        """Markdown: one line per (model, device, compensation, variant), accuracy mean +- std (%) per time."""
        lines = {}
        for s in self.summary():
            k = (s["model"], s["device"], s["compensation"], s["variant_name"])
            lines.setdefault(k, {})[s["time"]] = f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
        head = "| model | device | compensation | variant | " + " | ".join(self.spec.times) + " |"
        rows = [head, "|" + "---|" * (4 + len(self.spec.times))]
        for k, v in lines.items():
            rows.append("| " + " | ".join(k) + " | " + " | ".join(v.get(t, "") for t in self.spec.times) + " |")
        return "\n".join(rows)

    # ------------------------------------------------------------------------------------------- files
    def to_csv(self, rows=None, columns=None) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns or self.columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows if rows is not None else self.rows)
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {"format": "aimc-sweep-results", "version": 1, "spec": self.spec.to_dict(), "meta": self.meta,
                "columns": self.columns, "rows": self.rows}

    def _write_h5(self, path: Path) -> None:
        import h5py
        import numpy as np
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "aimc-sweep-results"
            f.attrs["version"] = 1
            f.attrs["spec"] = json.dumps(self.spec.to_dict())
            g = f.create_group("table")
            g.attrs["columns"] = json.dumps(self.columns)
            for c in self.columns:
                vals = [r[c] for r in self.rows]
                if all(isinstance(v, bool) for v in vals):
                    arr = np.array(vals, bool)
                elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                    arr = np.array(vals, np.int64)
                elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                    arr = np.array(vals, np.float64)
                else:
                    arr = np.array([str(v) for v in vals], dtype=h5py.string_dtype())
                g.create_dataset(c, data=arr)

    def write(self, out=None) -> dict:
        """results.json, results.csv, results.h5, summary.csv and plots/variant-NN.png (matplotlib if
        installed) into ``out`` (default: the sweep's folder). They are rebuilt from the task records at the
        end of every run, atomically."""
        out = Path(out) if out is not None else self.out
        if out is None:
            raise ValueError("SweepResults.write: no folder given")
        files = {"json": atomic_write_text(out / "results.json", json.dumps(self.to_dict(), indent=1)),
                 "csv": atomic_write_text(out / "results.csv", self.to_csv()),
                 "h5": atomic_write(out / "results.h5", self._write_h5, suffix=".h5.tmp")}
        summ = self.summary()
        if summ:
            files["summary"] = atomic_write_text(out / "summary.csv", self.to_csv(summ, list(summ[0])))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            pass
        else:
            for k in range(len(self.spec.variants)):
                p = self.plot(k, out / "plots" / f"variant-{k:02d}.png")
                if p is not None:
                    files[f"plot-{k:02d}"] = p
        self.files = {k: str(v) for k, v in files.items()}
        return self.files

    def plot(self, variant: int, path) -> Path | None:
        """Accuracy mean +- std over time for one hardware variant: a line per (model, device, compensation).

        Drawn on a bare ``Figure`` (no pyplot state), ticks at the spec's times only and fixed margins: log
        minor ticks and ``tight_layout`` took 0.2 of the 0.33 s CPU a plot cost (a fixed cost of every run)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullLocator
        summ = [s for s in self.summary() if s["variant"] == variant]
        if not summ:
            return None
        fig = Figure(figsize=(6.5, 4))
        fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)
        ax = fig.subplots()
        curves: dict = {}
        for s in summ:
            curves.setdefault((s["model"], s["device"], s["compensation"]), []).append(s)
        for (m, d, c), ss in curves.items():
            ss.sort(key=lambda s: s["time_s"])
            ax.errorbar([s["time_s"] for s in ss], [100 * s["mean"] for s in ss],
                        yerr=[100 * s["std"] for s in ss], marker="o", capsize=3,
                        label=f"{m}, {d}, {c} ({ss[0]['n_chips']} chips)")
        ts = list(self.spec.times_s)
        ax.set_xscale("log" if min(ts) > 0 else "symlog")
        ax.set_xticks(ts)
        ax.set_xticklabels(self.spec.times)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("time after programming")
        ax.set_ylabel("test accuracy (%), mean ± std")
        ax.set_title(f"variant {variant}: {self.spec.variant_name(variant)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110), suffix=".png.tmp")
