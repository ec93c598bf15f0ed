"""Per-layer parity report of two twins' outputs, as a printed table, and the line that ends it."""
from __future__ import annotations

import numpy as np

from parity_tests.harness import FLOAT32_TOL, MEASURE, Outputs, rel_error


def layer_rows(a: Outputs, b: Outputs) -> list[tuple[str, float, float]]:
    """(tensor, max |a-b|, rel error) for every hidden state, attention map, (Swin) stage output,
    pooled features, logits, in forward order."""
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


def tolerance_text(tol: float) -> str:
    """1e-05, 1e-02, 1.4e-02: a round bound without a spurious digit, any other with one."""
    return f"{tol:.1e}".replace(".0e", "e")


def format_report(a: Outputs, b: Outputs, names=("jax", "torch"), tol: float = FLOAT32_TOL,
                  judged: tuple[str, ...] | None = None, tol_note: str = "") -> tuple[str, bool]:
    """The table as text, and whether every judged tensor is within `tol`.

    `judged` names the rows held to `tol` (None: all of them); the others are shown with "-" in
    the ok column. The header says what the error column measures and what it is judged against.
    """
    rows = layer_rows(a, b)
    held = [r for r in rows if judged is None or r[0] in judged]
    scope = "every tensor" if judged is None else " and ".join(judged) + " (other rows shown, not judged)"
    lines = [f"a = {names[0]}, b = {names[1]}; rel err = {MEASURE}",
             f"ok: rel err <= tolerance {tolerance_text(tol)}{tol_note}, on {scope}", "",
             f"{'tensor':<22} {'max|a-b|':>12} {'rel err':>10}  ok", "-" * 50]
    for name, abs_err, rel in rows:
        verdict = ("yes" if rel <= tol else "NO") if judged is None or name in judged else "-"
        lines.append(f"{name:<22} {abs_err:12.2e} {rel:10.2e}  {verdict}")
    ok = all(rel <= tol for _, _, rel in held)
    if a.logits is not None:
        agree = float(np.mean(a.logits.argmax(-1) == b.logits.argmax(-1)))
        lines.append(f"top-1 agreement {names[0]} vs {names[1]}: {agree:.0%}")
    worst = max(held, key=lambda r: r[2])
    lines.append(f"worst: {worst[0].strip()} {worst[2]:.2e} (tolerance {tolerance_text(tol)}) -> {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines), ok


def first_over(a: Outputs, b: Outputs, tol: float) -> tuple[str, float] | None:
    """The first tensor, in forward order, whose rel error exceeds `tol`: where the twins part."""
    return next(((" ".join(name.split()), rel) for name, _, rel in layer_rows(a, b) if not rel <= tol), None)
