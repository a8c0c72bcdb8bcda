"""Optimizer configurations of the PINN benchmark, shared by the JAX and PyTorch runners.

An optimizer is named ``kind[:key=value,...]`` on the command line, e.g. ``sngd:rank=300``
or ``adam:lr=1e-3``; a few short names (``sngd-r100``, ``sngd-r300``) stand for common
settings. Every setting not given takes the default below, the same in both frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULTS",
    "DEFAULTS_LIST",
    "DEFAULT_LIST",
    "KINDS",
    "UNTUNED",
    "OptimizerSpec",
    "parse_optimizers",
]

#: Default settings of each kind. Damping ``mu`` is the Tikhonov shift of the Gauss–Newton
#: system; ``1e-10`` keeps the solves at float64 working accuracy on these problems.
DEFAULTS: dict[str, dict[str, Any]] = {
    # Adam with an exponentially decayed learning rate: lr * decay^(step / decay_steps).
    "adam": {"lr": 1e-3, "decay": 0.1, "decay_steps": 10_000},
    # L-BFGS with a strong-Wolfe (zoom) line search.
    "lbfgs": {"history": 50},
    # Dense ENGD, fast form: Cholesky of G + mu I (P x P), grid line search.
    "engd": {"damping": 1e-10},
    # ENGD in residual space (Woodbury): Cholesky of J J^T + mu I (N x N).
    "engd-woodbury": {"damping": 1e-10},
    # SNGD: rank-l Nystrom G_hat, fresh Gaussian sketch each step.
    "sngd": {"rank": 300, "damping": 1e-10, "inverse": "woodbury", "oversample": 0},
    # CG on G + mu I with a rank-l Nystrom preconditioner.
    "nystrom-pcg": {"rank": 100, "damping": 1e-10, "maxiter": 100, "rtol": 1e-10},
    # SPRING: Woodbury form with momentum.
    "spring": {"damping": 1e-10, "momentum": 0.5},
}
KINDS = tuple(DEFAULTS)
#: The kinds that are not natural-gradient methods (no step engine).
FIRST_ORDER = ("adam", "lbfgs")
#: Step-engine settings every natural-gradient kind takes besides its own (left to the
#: library's default unless given): ``grid_batch`` is the grid line search's candidates per
#: evaluation (an integer, or ``all``: the whole grid in one batch, no early stop);
#: ``grid_warm_start`` starts the grid at the last step's size.
ENGINE_SETTINGS: dict[str, Any] = {"grid_batch": 1, "grid_warm_start": False}
#: The untuned defaults (issue 22): every natural-gradient optimizer with no damping, rank or
#: momentum given, as a user would first call it; ``--optimizers defaults`` runs them all.
UNTUNED = {
    "sngd-default": "sngd",
    "engd-default": "engd",
    "engd-woodbury-default": "engd-woodbury",
    "nystrom-pcg-default": "nystrom-pcg",
    "spring-default": "spring",
}
DEFAULTS_LIST = ",".join(UNTUNED)
# At rank 100 (below d_eff(1e-10) of the Poisson 2D Gram matrix, benchmarks/results/pinn)
# the Woodbury inverse scales the gradient outside the sketched range by 1/mu = 1e10 and the
# line search stalls at eta ~ 1e-9 (measured: relative L2 0.36 after 120 s); the projected
# inverse is the rank-l Newton step on the sketched range.
_ALIASES = {"sngd-r100": "sngd:rank=100;inverse=projected", "sngd-r300": "sngd:rank=300"}
DEFAULT_LIST = "adam,lbfgs,engd,engd-woodbury,sngd-r100,sngd-r300,nystrom-pcg,spring"


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer configuration.

    Attributes
    ----------
    label : str
        Name in tables and plots (the command-line spelling).
    kind : str
        One of :data:`KINDS`.
    settings : dict
        Every setting of the kind, defaults filled in.
    """

    label: str
    kind: str
    settings: dict[str, Any]

    @property
    def natural_gradient(self) -> bool:
        """Whether this is one of the Gauss–Newton / natural-gradient methods."""
        return self.kind not in FIRST_ORDER


def _value(text: str, default: Any, where: str) -> Any:
    if isinstance(default, str):
        return text
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{where}: expected true or false, got {text!r}")
        return text.lower() == "true"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {text!r}") from None
    if isinstance(default, int) and not isinstance(default, bool):
        if value != int(value):
            raise ValueError(f"{where}: expected an integer, got {text!r}")
        return int(value)
    return value


def parse_optimizers(text: str) -> list[OptimizerSpec]:
    """Parse a comma-separated list such as ``"adam,sngd:rank=100;damping=1e-8,engd"``.

    Settings inside one entry are separated by ``;`` (``,`` separates entries).

    Raises
    ------
    ValueError
        For an unknown kind or setting, naming the valid ones.
    """
    specs = []
    text = text.replace("defaults", DEFAULTS_LIST) if "defaults" in text.split(",") else text
    for raw in (s.strip() for s in text.split(",")):
        if not raw:
            continue
        label = raw
        if raw in UNTUNED:  # no setting at all: the library's own defaults
            specs.append(OptimizerSpec(label, UNTUNED[raw], {}))
            continue
        name, _, extra = raw.partition(":")  # an alias takes further settings too
        entry = _ALIASES[name] + (f";{extra}" if extra else "") if name in _ALIASES else raw
        kind, _, rest = entry.partition(":")
        if kind not in DEFAULTS:
            raise ValueError(
                f"optimizer {raw!r}: unknown kind {kind!r}; expected one of "
                f"{', '.join(KINDS + tuple(_ALIASES) + tuple(UNTUNED))} or 'defaults'"
            )
        settings = dict(DEFAULTS[kind])
        engine = ENGINE_SETTINGS if kind not in FIRST_ORDER else {}
        for item in filter(None, (s.strip() for s in rest.split(";"))):
            key, eq, val = item.partition("=")
            if not eq or key not in {**settings, **engine}:
                raise ValueError(
                    f"optimizer {raw!r}: setting {item!r} is not key=value with key one of "
                    f"{sorted({**settings, **engine})}"
                )
            where = f"optimizer {raw!r}, {key}"
            if key == "grid_batch" and val == "all":
                settings[key] = None
            else:
                settings[key] = _value(val, settings.get(key, engine.get(key)), where)
        specs.append(OptimizerSpec(label, kind, settings))
    if not specs:
        raise ValueError("no optimizer given")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optimizers repeat a name: {labels}")
    return specs
