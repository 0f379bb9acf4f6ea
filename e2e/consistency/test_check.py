"""The checker's rules on hand-made histories: each anomaly class is caught, and what is
allowed (overlapping writes either way, maybe-applied writes) is not flagged."""

from __future__ import annotations

from .check import FinalRead, check
from .history import Op

KEYS = ["k"]


def op(i: int, f: str, invoke: float, complete: float | None, type_: str = "ok",
       value: str | None = None, read: str | None = None, key: str = "k", **kw) -> Op:
    o = Op(id=i, process=0, f=f, key=key, node="n1", invoke=invoke, complete=complete,
           type=type_, value=value, read=read, **kw)
    if f == "get":
        o.origin = read
    return o


def final_of(value: str | None, nodes: tuple[str, ...] = ("n1", "n2")) -> dict:
    return {"k": {n: FinalRead(value, origin=value) for n in nodes}}


def listed_of(present: bool, nodes: tuple[str, ...] = ("n1", "n2")) -> dict:
    return {n: ({"k"} if present else set()) for n in nodes}


def test_clean_history_passes():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "get", 2, 3, read="a"),
           op(2, "put", 4, 5, value="b"), op(3, "get", 6, 7, read="b")]
    rep = check(ops, KEYS, final_of("b"), listed_of(True))
    assert rep.ok, rep.anomalies
    assert rep.line() == "checker: ops=4 acknowledged=2 lost=0 anomalies=0"


def test_lost_acknowledged_write_is_counted():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "put", 2, 3, value="b")]
    rep = check(ops, KEYS, final_of("a"), listed_of(True))
    assert rep.lost == 1 and "value=b" in rep.lost_writes[0]


def test_final_absent_after_acknowledged_put_is_lost():
    rep = check([op(0, "put", 0, 1, value="a")], KEYS, final_of(None), listed_of(False))
    assert rep.lost == 1


def test_resurrected_delete_is_lost():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "delete", 2, 3)]
    rep = check(ops, KEYS, final_of("a"), listed_of(True))
    assert rep.lost == 1


def test_overlapping_writes_may_resolve_either_way():
    ops = [op(0, "put", 0, 5, value="a"), op(1, "put", 1, 4, value="b")]
    for winner in ("a", "b"):
        rep = check(ops, KEYS, final_of(winner), listed_of(True))
        assert rep.ok and rep.lost == 0, (winner, rep.anomalies, rep.lost_writes)


def test_stale_read_after_acknowledged_overwrite():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "put", 2, 3, value="b"),
           op(2, "get", 4, 5, read="a")]
    rep = check(ops, KEYS, final_of("b"), listed_of(True))
    assert len(rep.anomalies) == 1 and "stale" in rep.anomalies[0]


def test_read_of_deleted_object_after_delete_ack():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "delete", 2, 3), op(2, "get", 4, 5, read="a")]
    rep = check(ops, KEYS, final_of(None), listed_of(False))
    assert len(rep.anomalies) == 1


def test_concurrent_read_may_see_old_or_new():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "put", 2, 6, value="b"),
           op(2, "get", 3, 4, read="a"), op(3, "get", 3, 4, read="b")]
    assert check(ops, KEYS, final_of("b"), listed_of(True)).ok


def test_maybe_write_may_appear_late_and_may_win():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "put", 2, 3, "info", value="m"),
           op(2, "get", 10, 11, read="a"), op(3, "get", 12, 13, read="m")]
    rep = check(ops, KEYS, final_of("m"), listed_of(True))
    assert rep.ok, rep.anomalies
    # ...even after a later acknowledged write: its effect may come at any time (a request
    # held by a paused node), but a write acknowledged after a read saw it must win
    ops.append(op(4, "put", 20, 21, value="c"))
    assert check(ops, KEYS, final_of("c"), listed_of(True)).ok
    assert check(ops, KEYS, final_of("m"), listed_of(True)).lost == 1
    # unread, a maybe-applied write may still land after the acknowledged one
    del ops[3]
    assert check(ops, KEYS, final_of("m"), listed_of(True)).ok


def test_failed_write_is_never_read_nor_listed():
    ops = [op(0, "put", 0, 1, "fail", value="x"), op(1, "get", 2, 3, read="x"),
           op(2, "list", 4, 5, listed=["k"])]
    rep = check(ops, KEYS, final_of(None), listed_of(False))
    assert len(rep.anomalies) == 2, rep.anomalies


def test_value_never_written_and_future_read():
    ops = [op(0, "get", 0, 1, read="zz"), op(1, "get", 2, 3, read="later"),
           op(2, "put", 4, 5, value="later")]
    rep = check(ops, KEYS, final_of("later"), listed_of(True))
    assert len(rep.anomalies) == 2, rep.anomalies


def test_torn_body_and_bad_copy_are_anomalies():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "put", 0, 1, value="s", key="src"),
           op(2, "copy", 2, 3, value="c", src="src"), op(3, "get", 4, 5, read="c")]
    ops[3].origin = "s"
    assert check(ops, ["k", "src"], {}, {}).ok
    ops[3].origin = "a"  # a copy holding bytes never written to its source
    assert len(check(ops, ["k", "src"], {}, {}).anomalies) == 1
    ops[3].body_ok = False
    assert len(check(ops, ["k", "src"], {}, {}).anomalies) == 1
    # a copy of a copy holds the body of the first source
    ops[3].body_ok = True
    ops[3].origin = "s"
    ops += [op(4, "copy", 6, 7, value="c2", src="k", key="third"),
            op(5, "get", 8, 9, read="c2", key="third")]
    ops[5].origin = "s"
    assert check(ops, ["k", "src", "third"], {}, {}).ok


def test_listing_must_agree_with_reads():
    ops = [op(0, "put", 0, 1, value="a"), op(1, "list", 2, 3, listed=[])]
    rep = check(ops, KEYS, final_of("a"), listed_of(False))
    assert len(rep.anomalies) == 3, rep.anomalies  # the stale listing, and both final listings


def test_nodes_that_disagree_are_flagged():
    ops = [op(0, "put", 0, 1, value="a")]
    final = {"k": {"n1": FinalRead("a", origin="a"), "n2": FinalRead(None)}}
    rep = check(ops, KEYS, final, {})
    assert rep.lost == 1 and any("disagree" in a for a in rep.anomalies)
