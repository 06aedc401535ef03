"""The one mismatch message, and the commands that reproduce or save a case.

Every failure, in pytest and on the command line, is described by `format_failure`, top
to bottom: what ran, how many elements exceed the budget, the worst element with the
budget beside it, the next worst indices, and the command that reruns exactly this case.
"""

import shlex

from precision_suite.budgets import RESIDUAL_OUT_BUDGET


def repro_command(spec, backend=None):
    """Return a shell command that reruns one case, optionally for one backend."""
    command = f"precision-suite repro {shlex.quote(spec.to_json())}"
    if backend:
        command += f" --backend {backend}"
    return command


def save_command(spec, note=None):
    """Return a shell command that adds a case to the regression corpus."""
    command = f"precision-suite save {shlex.quote(spec.to_json())}"
    if note:
        command += f" --note {shlex.quote(note)}"
    return command


def describe_case(spec):
    """Return a one-line description of a case: id, dtype, shape, eps, distributions, seed."""
    return (
        f"case {spec.case_id}: {spec.op} {spec.dtype} shape {list(spec.shape)} eps {spec.eps:g} "
        f"x_dist {spec.x_dist} (x_scale {spec.x_scale:g}) w_dist {spec.w_dist} "
        f"residual {str(spec.residual).lower()} seed {spec.seed}"
    )


def _element(worst):
    index = ", ".join(str(i) for i in worst.index)
    return f"{worst.output}[{index}]"


def _budget_of(worst, budget):
    return RESIDUAL_OUT_BUDGET.ulp if worst.output == "residual_out" else budget


def format_failure(result):
    """Return the mismatch message of a failed `CaseResult`.

    Parameters
    ----------
    result : CaseResult
        A result with an error record.

    Returns
    -------
    str
        Several lines; the last one is the reproduce command.
    """
    spec = result.spec
    record = result.record
    budget = result.ulp_budget
    lines = [f"{result.backend} on {result.device} failed {describe_case(spec)}"]

    budgets = f"{budget:g} ulp"
    if spec.residual:
        budgets += f" ({RESIDUAL_OUT_BUDGET.ulp:g} ulp for residual_out)"
    lines.append(
        f"{record.over_budget} of {record.elements} elements exceed the budget of {budgets} "
        f"({record.frac_over_budget:.2%}); max {record.max_ulp_error:.3g} ulp, "
        f"p99 {record.p99_ulp_error:.3g} ulp"
    )
    if record.nonfinite_mismatches:
        lines.append(f"{record.nonfinite_mismatches} elements are NaN or inf where the reference is finite, "
                     "or finite where it is not")

    if record.worst:
        worst = record.worst[0]
        lines.append(
            f"worst element {_element(worst)}: actual {worst.actual!r}, reference {worst.reference!r}, "
            f"{worst.ulp_error:.3g} ulp (budget {_budget_of(worst, budget):g}), abs error {worst.abs_error:.3g}, "
            f"rel error {worst.rel_error:.3g}"
        )
    if len(record.worst) > 1:
        others = ", ".join(f"{_element(item)} {item.ulp_error:.3g} ulp" for item in record.worst[1:])
        lines.append(f"next worst: {others}")

    lines.append(f"keep it as a regression case: {save_command(spec)}")
    lines.append(f"reproduce: {repro_command(spec, result.backend)}")
    return "\n".join(lines)


def format_error(result):
    """Return the message of a result whose backend raised or returned a malformed output."""
    return "\n".join([
        f"{result.backend} on {result.device} errored on {describe_case(result.spec)}",
        result.message,
        f"reproduce: {repro_command(result.spec, result.backend)}",
    ])
