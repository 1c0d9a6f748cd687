"""A page of an audit's kept results ends before its archives pass the byte budget (so a page of
maps fits a gRPC message), always holds its first pair, and reads pairs with nothing kept free."""

from __future__ import annotations

from typing import Any

from explainer_service.api.service import ApiService
from explainer_service.pair_archive import pack_pair_results
from tests.unit.test_pair_archive import _result


class _Store:
    """The one store call audit_kept makes: a pair's archive, or None when nothing was kept."""

    def __init__(self, blobs: dict[int, bytes]) -> None:
        self.blobs = blobs
        self.read: list[int] = []

    def get_pair_maps(self, job_id: str, index: int) -> bytes | None:
        self.read.append(index)
        return self.blobs.get(index)


def _service(blobs: dict[int, bytes]) -> tuple[ApiService, Any]:
    store = _Store(blobs)
    return ApiService(store, engine="local"), store  # type: ignore[arg-type]


def test_a_page_of_kept_results_stops_before_the_budget():
    blob = pack_pair_results([_result("corrrise", 20, 1)])
    size = len(blob)
    blobs = {i: blob for i in range(6) if i != 2}  # pair 2 failed: nothing kept
    service, store = _service(blobs)
    kept, covered = service.audit_kept("j", list(range(6)))
    assert covered == 6 and sorted(kept) == [0, 1, 3, 4, 5]
    assert kept[3]["corrrise"].masks == 20 and kept[3]["corrrise"].has_maps

    service, store = _service(blobs)
    kept, covered = service.audit_kept("j", list(range(6)), max_bytes=3 * size)
    assert covered == 4 and sorted(kept) == [0, 1, 3]  # pairs 0, 1, 3 fill it; 4 would pass it
    assert store.read == [0, 1, 2, 3, 4]

    service, _ = _service(blobs)
    kept, covered = service.audit_kept("j", [4, 5], max_bytes=1)  # the first pair always
    assert covered == 1 and sorted(kept) == [4]
