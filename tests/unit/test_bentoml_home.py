"""BentoML resolves its store paths once per process: the platform re-points them when the home changes."""

from __future__ import annotations

from pathlib import Path

from pipelines import packaging
from tests.homes import falaj_home


def test_a_second_home_in_one_process_gets_its_own_bentoml_stores(tmp_path: Path) -> None:
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    with falaj_home(tmp_path / "first"):
        packaging.bentoml_home()
        first = BentoMLContainer.model_store.get()._path
        (first / "left-over" / "v1").mkdir(parents=True)  # what another home's process left behind
    with falaj_home(tmp_path / "second"):
        home = packaging.bentoml_home()
        assert BentoMLContainer.model_store.get()._path == home / "models"
        assert BentoMLContainer.bento_store.get()._path == home / "bentos"
        assert bentoml.models.list() == []
    assert first == tmp_path.resolve() / "first" / "bentoml" / "models"
