from fluxmix.message import Message, derived_id, source_id


def test_envelope_round_trips_through_msgpack() -> None:
    m = Message(id="a/b/1", body={"seq": 1, "raw": b"\x00\xff", "n": {"x": [1, 2]}}, origin="g.out",
                scenario="ab" * 32, headers={"k": "v"})
    assert Message.decode(m.encode()) == m


def test_ids_are_deterministic() -> None:
    assert source_id("flow", "src", 7) == source_id("flow", "src", 7) == "flow/src/7"
    a = derived_id("flow/src/7", "map", "out", 0)
    assert a == derived_id("flow/src/7", "map", "out", 0)
    assert a != derived_id("flow/src/7", "map", "out", 1)
