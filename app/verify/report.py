"""What the accuracy gate measured and decided, as frozen dataclasses and JSON
(docs/accuracy-gate.md#result-events-and-exit-codes). No heavy import: a warm boot asks
:meth:`AccuracyReport.covers` without loading numpy, onnx or ONNX Runtime. A figure not
measured is None, never judged (``note`` says why)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from app.values import PrecisionMode

SCHEMA = 2  # 1: values only; a record of it is checked again, never read as a pass
METRICS = {"rel_l2": "max", "max_abs": "max", "cosine": "min", "matched": "min",
           "agreement": "min", "variation": "max", "neighbours": "min"}
#: Figures of an output beyond the values', each judged by the tolerance's bound of that name.
SET_FIGURES = {"matched": "matched", "matched_engine": "matched", "agreement": "agreement",
               "variation": "variation", "neighbours": "neighbours"}


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float | None = None
    cosine: float | None = None
    max_abs: float | None = None
    atol: float = 0.0
    matched: float | None = None
    agreement: float | None = None
    variation: float | None = None
    neighbours: float | None = None

    def override(self, metric: str | None, threshold: float | None) -> Tolerance:
        if metric is None or threshold is None:
            return self
        if metric not in (*METRICS, "atol"):
            raise ValueError(f"unknown accuracy metric {metric!r}; use one of "
                             f"{sorted((*METRICS, 'atol'))}")
        return replace(self, **{metric: float(threshold)})

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


#: Scale-free bounds per precision, set from the figures in docs/accuracy-gate.md#defaults.
DEFAULT_TOLERANCES: dict[PrecisionMode, Tolerance] = {
    PrecisionMode.FP32: Tolerance(rel_l2=1e-4, cosine=0.99999, atol=5e-5, matched=0.95,
                                  agreement=0.99, variation=0.01, neighbours=1.0),
    PrecisionMode.FP16: Tolerance(rel_l2=3e-2, cosine=0.999, atol=1e-3, matched=0.9,
                                  agreement=0.97, variation=0.1, neighbours=1.0),
    PrecisionMode.INT8: Tolerance(rel_l2=0.15, cosine=0.99, atol=1e-2, matched=0.75,
                                  agreement=0.9, variation=0.5, neighbours=1.0),
}


def default_tolerance(precision: PrecisionMode | str) -> Tolerance:
    return DEFAULT_TOLERANCES[PrecisionMode(precision)]


@dataclass(frozen=True)
class InputsUsed:
    kind: str  # "random" (seeded, at the opt shapes) or "samples" (a folder's files)
    count: int
    seed: int | None = None
    low: float | None = None
    high: float | None = None
    folder: str | None = None
    digest: str | None = None  # of the sample files, so that new samples mean a new check


@dataclass(frozen=True)
class OutputFigures:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    cosine: float
    nonfinite: int = 0
    nonfinite_model: int = 0  # of nonfinite: the ONNX model's
    minus_inf: int = 0  # of nonfinite: -inf against a finite value (underflowing log-probabilities)
    compare: str = "values"  # values, points, aligned (to another output), argmax or skip
    matched: float | None = None
    matched_engine: float | None = None
    agreement: float | None = None
    variation: float | None = None
    neighbours: float | None = None
    radius: float | None = None  # points: the radius the rows were matched within
    note: str = ""  # why a figure was not measured, where the comparison came from

    def to_json(self) -> dict[str, Any]:
        doc = {**asdict(self), "shape": list(self.shape)}
        return {k: _out(v) if isinstance(v, float) else v for k, v in doc.items()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OutputFigures:
        """Each field read as its annotation says; a missing one takes its default."""
        read: dict[str, Callable[[Any], Any]] = {"float": float, "int": int, "str": str,
                                                 "float | None": _opt}
        return cls(name=str(doc["name"]), shape=tuple(int(d) for d in doc["shape"]),
                   **{f.name: read[str(f.type)](doc[f.name]) for f in fields(cls)[2:] if f.name in doc})


@dataclass(frozen=True)
class Failure:
    output: str
    metric: str
    value: float
    threshold: float

    @property
    def relation(self) -> str:
        return "<" if METRICS.get(SET_FIGURES.get(self.metric, self.metric)) == "min" else ">"


@dataclass(frozen=True)
class AccuracyReport:
    model_name: str
    precision: str
    tolerance: Tolerance
    inputs: InputsUsed
    outputs: tuple[OutputFigures, ...]
    failure: Failure | None = None
    engine_sha256: str | None = None
    onnx_sha256: str | None = None
    duration_s: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    outputs_config: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failure is None

    def covers(self, *, engine_sha256: str, onnx_sha256: str, tolerance: Tolerance,
               inputs: InputsUsed | None = None,
               outputs_config: dict[str, Any] | None = None) -> bool:
        return (self.passed and self.engine_sha256 == engine_sha256
                and self.onnx_sha256 == onnx_sha256 and self.tolerance == tolerance
                and (inputs is None or self.inputs == inputs)
                and self.outputs_config == (outputs_config or {}))

    def to_json(self) -> dict[str, Any]:
        doc = {"schema": SCHEMA, **asdict(self), "passed": self.passed}
        failure = doc["failure"]
        return {**doc, "outputs": [o.to_json() for o in self.outputs],
                "failure": failure and {**failure, "value": _out(failure["value"])},
                "duration_s": round(self.duration_s, 4)}

    @classmethod
    def from_json(cls, doc: Any) -> AccuracyReport | None:
        """None when ``doc`` is not a report ``to_json`` wrote."""
        try:
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
                return None
            failure = doc.get("failure")
            return cls(
                model_name=str(doc["model_name"]), precision=str(doc["precision"]),
                tolerance=Tolerance(**{m: _opt(doc["tolerance"].get(m)) for m in METRICS},
                                    atol=float(doc["tolerance"].get("atol", 0.0))),
                inputs=InputsUsed(**doc["inputs"]),
                outputs=tuple(OutputFigures.from_json(o) for o in doc["outputs"]),
                failure=None if failure is None else Failure(
                    str(failure["output"]), str(failure["metric"]), float(failure["value"]),
                    float(failure["threshold"])),
                engine_sha256=doc.get("engine_sha256"), onnx_sha256=doc.get("onnx_sha256"),
                duration_s=float(doc.get("duration_s", 0.0)), extras=dict(doc.get("extras", {})),
                outputs_config=dict(doc.get("outputs_config", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _out(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
