"""Per-layer parity report of two twins' outputs, as a printed table."""
from __future__ import annotations

import numpy as np

from parity_tests.harness import FLOAT32_TOL, Outputs, rel_error


def layer_rows(a: Outputs, b: Outputs) -> list[tuple[str, float, float]]:
    """(tensor, max |a-b|, metric) for every hidden state, attention map, (Swin) stage output, pooled
    features, logits."""
    rows = []
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states, strict=True)):
        rows.append((f"block {i:2d} hidden", float(np.abs(x - y).max()), rel_error(x, y)))
        if a.attentions and b.attentions:
            rows.append((f"block {i:2d} attention", float(np.abs(a.attentions[i] - b.attentions[i]).max()),
                         rel_error(a.attentions[i], b.attentions[i])))
    for i, (x, y) in enumerate(zip(a.stages, b.stages, strict=True)):  # Swin
        rows.append((f"stage {i} output", float(np.abs(x - y).max()), rel_error(x, y)))
    rows.append(("pooled", float(np.abs(a.pooled - b.pooled).max()), rel_error(a.pooled, b.pooled)))
    if a.logits is not None:
        rows.append(("logits", float(np.abs(a.logits - b.logits).max()), rel_error(a.logits, b.logits)))
    return rows


def format_report(a: Outputs, b: Outputs, names=("jax", "torch"), tol: float = FLOAT32_TOL) -> tuple[str, bool]:
    """The table as text, and whether every tensor is within `tol`."""
    rows = layer_rows(a, b)
    lines = [f"{'tensor':<22} {'max abs err':>12} {'rel err':>10}  ok", "-" * 50]
    lines += [f"{name:<22} {abs_err:12.2e} {rel:10.2e}  {'yes' if rel <= tol else 'NO'}" for name, abs_err, rel in rows]
    ok = all(rel <= tol for _, _, rel in rows)
    if a.logits is not None:
        agree = float(np.mean(a.logits.argmax(-1) == b.logits.argmax(-1)))
        lines.append(f"top-1 agreement {names[0]} vs {names[1]}: {agree:.0%}")
    worst = max(rows, key=lambda r: r[2])
    lines.append(f"worst: {worst[0].strip()} {worst[2]:.2e} (tolerance {tol:.0e}) -> {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines), ok
