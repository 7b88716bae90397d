"""The fuzz targets (fuzz/targets.py) under Hypothesis, and every seed of the corpus.

Each target asserts its own invariants (only the library's errors escape;
whole and chunked feeding agree; events re-encode to what was read), so a test
here only has to call it. Three input shapes per target: arbitrary bytes,
arbitrary bytes with a chunking chosen by Hypothesis, and mutated seeds (which
reach the deep states random bytes rarely do). Example counts are capped per
test so the whole file stays well under 20 s in the ``ci`` profile.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.run_atheris import seed_inputs
from fuzz.targets import CHECKS, TARGETS, make_input, split_input

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
SEEDS = seed_inputs()


def capped(count: int) -> settings:
    """The active profile, with at most *count* examples."""
    current = settings.default
    return settings(
        max_examples=min(current.max_examples if current is not None else count, count),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


chunkings = st.lists(st.integers(1, 64), min_size=1, max_size=6)


@pytest.mark.parametrize("name", sorted(TARGETS))
@capped(100)
@given(data=st.binary(max_size=512))
def test_target_on_arbitrary_bytes(name: str, data: bytes) -> None:
    TARGETS[name](data)


@pytest.mark.parametrize("name", sorted(CHECKS))
@capped(80)
@given(payload=st.binary(max_size=400), sizes=chunkings, eof=st.booleans(), decisions=st.integers(0, 0xFFFF))
def test_check_with_hypothesis_chunking(name: str, payload: bytes, sizes: list[int], eof: bool, decisions: int) -> None:
    CHECKS[name](payload, sizes, eof, decisions)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few random edits: byte changes, insertions, deletions, truncation."""
    out = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(out)))
        if op == 0 and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif op == 1:
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del out[at : at + draw(st.integers(1, 8))]
        else:
            del out[at:]
    return bytes(out)


@pytest.mark.parametrize("name", sorted(SEEDS))
@capped(100)
@given(data=st.data())
def test_target_on_mutated_seeds(name: str, data: st.DataObject) -> None:
    TARGETS[name](data.draw(mutated(list(SEEDS[name].values()))))


@pytest.mark.parametrize("name", sorted(CHECKS))
@capped(60)
@given(data=st.data(), sizes=chunkings, eof=st.booleans())
def test_seed_transcripts_under_any_chunking(name: str, data: st.DataObject, sizes: list[int], eof: bool) -> None:
    payload, _, _, decisions = split_input(data.draw(st.sampled_from(list(SEEDS[name].values()))))
    CHECKS[name](payload, sizes, eof, decisions)


SEED_FILES = sorted((path.parent.name, path.name) for path in CORPUS.glob("*/*"))


@pytest.mark.parametrize(("name", "seed"), SEED_FILES)
def test_corpus_seed(name: str, seed: str) -> None:
    TARGETS[name]((CORPUS / name / seed).read_bytes())


def test_corpus_on_disk_matches_the_seed_list() -> None:
    on_disk = {(target, path.name): path.read_bytes() for target, name in SEED_FILES
               for path in [CORPUS / target / name]}
    expected = {(target, name): data for target, seeds in SEEDS.items() for name, data in seeds.items()}
    assert on_disk == expected, "run `python fuzz/run_atheris.py --write-corpus`"
    assert set(SEEDS) == set(TARGETS)


def test_input_layout_round_trips() -> None:
    payload, sizes, eof, decisions = split_input(make_input(b"abc", seed=5, eof=True, decisions=0xBEEF))
    assert (payload, eof, decisions) == (b"abc", True, 0xBEEF)
    assert all(size >= 1 for size in sizes)
    assert split_input(b"")[0] == b""
