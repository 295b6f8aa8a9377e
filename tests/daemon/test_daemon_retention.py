from pathlib import Path

from relaymd.daemon.retention import apply_retention, to_delete
from relaymd.models import StorageAccess
from relaymd.storage import open_store
from relaymd.storage.checkpoints import list_checkpoints, upload_checkpoint


def test_keeps_newest_n_and_never_the_pointer(tmp_path: Path) -> None:
    store = open_store(StorageAccess(url=(tmp_path / "s").as_uri()))
    payload = tmp_path / "state.xml"
    payload.write_text("<State/>")
    refs = {}
    for epoch, seq in [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]:
        refs[(epoch, seq)] = upload_checkpoint(
            store,
            job_id="j1",
            epoch=epoch,
            seq=seq,
            step=epoch * 10 + seq,
            files=[("state.xml", payload)],
            engine="openmm",
        )
    # Pointer at (2, 2): (3, 1) is newer (a stale writer's or not yet verified) and stays.
    deleted = apply_retention(store, "j1", refs[(2, 2)], keep=3)
    assert sorted((r.epoch, r.seq) for r in deleted) == [(1, 1)]
    left = sorted((r.epoch, r.seq) for r in list_checkpoints(store, "j1"))
    assert left == [(1, 2), (2, 1), (2, 2), (3, 1)]
    assert to_delete(list_checkpoints(store, "j1"), refs[(2, 2)], keep=1) != []
    assert all(
        (r.epoch, r.seq) != (2, 2)
        for r in to_delete(list_checkpoints(store, "j1"), refs[(2, 2)], keep=1)
    )
