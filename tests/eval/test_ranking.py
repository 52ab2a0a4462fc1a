"""Hits@1/20: distractors drawn from other conversations, ranking by the version's likelihood."""

import pytest

from eval.perplexity import reference_nll
from eval.ranking import draw_distractors, hits_at_1, hits_summary

POOL = {f"c{i}": [f"reply {i}.{j}" for j in range(5)] for i in range(6)}  # 6 conversations x 5 replies


def test_distractors_come_from_other_conversations_seeded_without_replacement():
    drawn = draw_distractors(["c0", "c3", "c0"], POOL, seed=7, k=19)
    for own, others in zip(["c0", "c3", "c0"], drawn, strict=True):
        assert len(others) == len(set(others)) == 19
        assert not any(text.startswith(f"reply {own[1]}.") for text in others)
    assert drawn == draw_distractors(["c0", "c3", "c0"], POOL, seed=7, k=19)  # same seed, same candidates
    assert drawn != draw_distractors(["c0", "c3", "c0"], POOL, seed=8, k=19)
    with pytest.raises(ValueError, match="only 25 replies"):
        draw_distractors(["c0"], POOL, seed=0, k=26)


def test_a_hit_is_the_reference_scoring_strictly_best(tiny_engine):
    prompt = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "What do you build?"}]
    candidates = ["I build clocks.", "Bees, mostly.", "Nothing at all, I am afraid.", "clocks clocks clocks"]
    nll = reference_nll(tiny_engine, [prompt] * 4, candidates)
    mean = [total / count for total, count in nll]
    best = min(range(4), key=mean.__getitem__)
    # Each candidate in turn as the reference, the rest as distractors: exactly the best one hits.
    hits = hits_at_1(
        tiny_engine,
        [prompt] * 4,
        candidates,
        [[c for c in candidates if c != reference] for reference in candidates],
    )
    assert hits == [1.0 if i == best else 0.0 for i in range(4)]
    # A distractor equal to the reference ties it: a tie is a miss.
    assert hits_at_1(tiny_engine, [prompt], [candidates[best]], [[candidates[best], "x"]]) == [0.0]
    assert hits_summary([1.0, 0.0, 0.0, 0.0]) == {"hits_at_1": 0.25, "hits_items": 4}
