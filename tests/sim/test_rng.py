"""Named streams: stable, independent, and the bulk draw equals single draws."""

from hypothesis import given
from hypothesis import strategies as st

from compactsim.sim.rng import RngStreams


@given(st.lists(st.integers(0, 9000), min_size=1, max_size=8), st.integers(0, 2**32))
def test_randoms_equal_successive_random_calls(chunks, seed):
    single = RngStreams(seed)("s")
    bulk = RngStreams(seed)("s")
    expected = [single.random() for _ in range(sum(chunks))]
    got = []
    for k in chunks:
        got.extend(bulk.randoms(k))
    assert got == expected


def test_streams_are_independent_and_stable():
    a = RngStreams(7)
    first = [a("one").random() for _ in range(5)]
    b = RngStreams(7)
    b("two").random()                       # another stream drawn first changes nothing
    assert [b("one").random() for _ in range(5)] == first
    assert [RngStreams(8)("one").random() for _ in range(5)] != first
