"""Evaluation reports: eval.json (everything), eval.md (side-by-side tables), PNG plots.

Per-state action rates (`state_action_rates`, from the env's turn labels) get a table and a plot of their
own (`state_rates_table`, `plot_state_rates`), shared with the demo report: on the revisions task they show
where a policy's behaviour differs (updates on revision turns, stores on distractor turns).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from atommem.eval.scores import RATE_KINDS


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


STATE_KINDS = ("create", "update", "delete", "scratchpad", "read", "answer", "error")  # the kinds per-state tables show (those used)


def state_rates_table(rates_by_name: dict[str, dict[str, dict[str, float]]], kinds: Sequence[str] = STATE_KINDS) -> str:
    """Markdown: per turn state, its number of turns, then one row per kind any policy used with each named
    policy's operations per turn of that state."""
    names = list(rates_by_name)
    rows = []
    for st in sorted({st for rates in rates_by_name.values() for st in rates}):
        of = [rates_by_name[n].get(st, {}) for n in names]
        rows.append([st, "turns", *[r.get("turns", 0) for r in of]])
        rows += [[st, k, *[r.get(k, math.nan) for r in of]] for k in kinds if any(r.get(k, 0) for r in of)]
    return _table(["state", "operation", *names], rows)


def plot_state_rates(rates_by_name: dict[str, dict[str, dict[str, float]]], out_png: str | Path,
                     kinds: Sequence[str] = ("create", "update", "delete", "scratchpad"),
                     title: str = "Operations per turn by turn state") -> Path | None:
    """One panel per turn state; in each, grouped bars (one colour per named policy) for those of `kinds` any
    policy used (a scratchpad bar only for an action set that writes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rates_by_name)
    states = sorted({st for rates in rates_by_name.values() for st in rates})
    if not states:
        return None
    kinds = [k for k in kinds if any(r.get(k, 0) for rates in rates_by_name.values() for r in rates.values())] or list(kinds)
    fig, axes = plt.subplots(1, len(states), figsize=(3.2 * len(states), 3.6), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(names))
    for ax, st in zip(axes[0], states):
        for i, n in enumerate(names):
            ax.bar([k + i * width for k in range(len(kinds))], [rates_by_name[n].get(st, {}).get(k, 0.0) for k in kinds],
                   width=width, label=n)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], kinds)
        ax.set_title(st)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("operations per turn")
    axes[0][-1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def markdown(results: Sequence[Any], comparisons: list[dict], meta: dict) -> str:
    parts = ["# AtomMem evaluation", ""]
    parts += [f"- {k}: `{v}`" for k, v in meta.items()]
    parts += ["", "## Overall", ""]
    header = ["policy", "episodes", "questions", "EM", "F1", "mean turns"]
    judged = any("judge_acc" in r.summary for r in results)
    if judged:
        header += ["judge acc", "judge failures"]
    rows = []
    for r in results:
        s = r.summary
        row = [r.policy, s["episodes"], s["questions"], s["em"], s["f1"], s["mean_turns"]]
        if judged:
            row += [s.get("judge_acc", math.nan), s.get("judge_failures", 0)]
        rows.append(row)
    parts += [_table(header, rows), ""]
    if comparisons:
        parts += ["## EM difference (paired bootstrap by episode, 95% CI)", ""]
        parts += [
            _table(["policy", "vs", "EM diff", "CI low", "CI high"],
                   [[c["policy"], c["against"], c["em_diff"], c["ci95"][0], c["ci95"][1]] for c in comparisons]),
            "",
        ]
    sources = sorted({s for r in results for s in r.summary["by_source"]})
    parts += ["## EM by dataset", "", _table(["policy", *sources],
              [[r.policy, *[r.summary["by_source"].get(s, {}).get("em", math.nan) for s in sources]] for r in results]), ""]
    buckets = list(results[0].summary["by_length"]) if results else []
    parts += ["## EM by context length (tokens)", "", _table(["policy", *buckets],
              [[r.policy, *[r.summary["by_length"][b]["em"] for b in buckets]] for r in results]), ""]
    parts += ["## Questions per length bucket", "", _table(["policy", *buckets],
              [[r.policy, *[r.summary["by_length"][b]["questions"] for b in buckets]] for r in results]), ""]
    parts += ["## Action rates (operations per turn)", "", _table(["policy", *RATE_KINDS],
              [[r.policy, *[r.summary["action_rates"][k] for k in RATE_KINDS]] for r in results]), ""]
    by_state = {r.policy: r.summary.get("state_action_rates", {}) for r in results}
    if any(by_state.values()):
        parts += ["## Action rates by turn state (operations per turn of that state)", "", state_rates_table(by_state), ""]
    return "\n".join(parts)


def plot(results: Sequence[Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    buckets = list(results[0].summary["by_length"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(buckets, [r.summary["by_length"][b]["em"] for b in buckets], marker="o", label=r.policy)
    ax.set_xlabel("context tokens")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("EM by context length")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "em_by_length.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(results))
    for i, r in enumerate(results):
        xs = [k + i * width for k in range(len(RATE_KINDS))]
        ax.bar(xs, [r.summary["action_rates"][k] for k in RATE_KINDS], width=width, label=r.policy)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(RATE_KINDS))], RATE_KINDS)
    ax.set_ylabel("operations per turn")
    ax.set_title("Action rates")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "action_rates.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    state_png = plot_state_rates({r.policy: r.summary.get("state_action_rates", {}) for r in results}, out / "state_rates.png")
    return paths + ([state_png] if state_png is not None else [])


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_report(out: str | Path, results: Sequence[Any], comparisons: list[dict], meta: dict | None = None) -> dict:
    """Write eval.json, eval.md, em_by_length.png and action_rates.png into `out`; return the JSON report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    report = {
        "meta": meta,
        "policies": {r.policy: r.summary for r in results},
        "comparisons": comparisons,
        "episodes": {r.policy: [e.to_dict() for e in r.episodes] for r in results},
        "judge_errors": {r.policy: list(r.judge_errors) for r in results if r.judge_errors},
        "wall_s": {r.policy: r.wall_s for r in results},
    }
    (out / "eval.json").write_text(json.dumps(_json_safe(report), indent=1))
    (out / "eval.md").write_text(markdown(results, comparisons, meta))
    report["plots"] = [str(p) for p in plot(results, out)] if results else []
    report["out"] = str(out)
    return report
