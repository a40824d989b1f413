"""Imported at start-up by the interpreters of bench.serving's second scorer only (it is on their
PYTHONPATH): that scorer's prediction log keeps nothing, so the bench can price the log's cost on the
request path against the same Bento with it. Never on a served deployment's path."""

from typing import Any

from pipelines import predictions


class DiscardingWriter:
    """The prediction writer's interface, keeping nothing."""

    def put(self, row: dict[str, Any]) -> None:
        pass

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        pass


predictions.prediction_writer = DiscardingWriter  # type: ignore[assignment]
