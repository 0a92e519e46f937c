"""trainer.blend: the served score's mix is chosen on the validation split (constructed catalogs)."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from trainer import blend, item_item

N, USERS = 40, 400


def _validation(model_scores, targets, history_rows=None, exclude=None) -> blend.Validation:
    users = len(targets)
    history_rows = np.full([users, 3], item_item.PAD) if history_rows is None else history_rows
    exclude = sp.csr_matrix((users, N)) if exclude is None else exclude
    return blend.Validation(np.asarray(model_scores, np.float32), history_rows, np.asarray(targets), exclude)


def _popularity_catalogs(seed: int = 0):
    """Items 0..39 with popularity falling as 1/(i+1); model scores are noise around a weak signal.

    "head" catalog: validation targets are drawn by popularity (a dense head, like MovieLens), so adding
    log popularity helps. "tail" catalog: targets are the items the noisy towers already like most among
    the unpopular half, so adding popularity only hurts.
    """
    rng = np.random.default_rng(seed)
    counts = 1000.0 / np.arange(1, N + 1)
    noise = rng.normal(scale=0.3, size=[USERS, N]).astype(np.float32)
    head_targets = rng.choice(N, size=USERS, p=counts / counts.sum())
    head_scores = noise.copy()
    head_scores[np.arange(USERS), head_targets] += 0.2
    tail_targets = rng.integers(N // 2, N, size=USERS)
    tail_scores = noise.copy()
    tail_scores[np.arange(USERS), tail_targets] += 0.8
    return counts, (head_scores, head_targets), (tail_scores, tail_targets)


@pytest.mark.parametrize("catalog, expected", [("head", "high"), ("tail", 0.0)])
def test_choose_picks_the_popularity_weight_the_catalog_rewards(catalog, expected):
    counts, head, tail = _popularity_catalogs()
    scores, targets = head if catalog == "head" else tail
    is_tail = np.arange(N) >= 8
    chosen, trials = blend.choose(_validation(scores, targets), {}, blend.log_prob(counts), is_tail, 5, 0.1)
    assert chosen.alpha == 0.0  # no item-item table offered
    if expected == "high":
        assert chosen.gamma >= 0.5
    else:
        assert chosen.gamma == expected
    assert trials[0].blend == chosen
    assert trials[0].objective == max(t.objective for t in trials)
    towers_alone = next(t for t in trials if t.blend == blend.Blend())
    assert trials[0].objective >= towers_alone.objective


def test_choose_uses_the_item_item_term_when_the_next_item_follows_the_last_one():
    # Users bought item i, then i + 1 (mod N): the towers are noise, the item-item table knows the pairs.
    rng = np.random.default_rng(1)
    last = rng.integers(0, N, size=USERS)
    targets = (last + 1) % N
    pairs = item_item.interaction_matrix(
        np.repeat(np.arange(2 * N), 2),
        np.stack([np.arange(2 * N) % N, (np.arange(2 * N) + 1) % N], 1).ravel(),
        N,
    )
    vectors = rng.normal(size=[N, 4])
    tables = blend.candidate_tables(pairs, vectors, neighbours=5)
    assert set(tables) == {item_item.COSINE, "ease:50", "ease:200", "ease:500"}
    history = np.stack([np.full(USERS, item_item.PAD), np.full(USERS, item_item.PAD), last], 1)
    validation = _validation(rng.normal(size=[USERS, N]), targets, history)
    flat = np.zeros(N, np.float32)
    chosen, trials = blend.choose(validation, tables, flat, np.zeros(N, bool), 3, 1.0)
    assert chosen.alpha > 0
    assert trials[0].recall > 0.6  # the item-item term finds i + 1 (it ties with i - 1)
    alone = next(t for t in trials if t.blend.alpha == 0 and t.blend.gamma == 0)
    assert alone.recall < 0.3


def test_the_objective_counts_a_tail_hit_twice_whatever_the_tail_share():
    # ml-latest-small's validation (608 users, 68 tail targets): 78 hits with 1 tail hit beat 78 − 10 with 2.
    n, tails = 608, 68
    accurate = blend.Trial(blend.Blend(), 78 / n, 1 / tails, tail_share=tails / n)
    tail_heavy = blend.Trial(blend.Blend(), 68 / n, 2 / tails, tail_share=tails / n)
    assert accurate.objective == pytest.approx((78 + 1) / n)
    assert accurate.objective > tail_heavy.objective
    # One more tail hit is worth two hits, not n / tails.
    assert tail_heavy.objective == pytest.approx((68 + 2) / n)


def test_choose_refuses_an_empty_validation_split():
    with pytest.raises(ValueError, match="no users"):
        blend.choose(
            _validation(np.zeros([0, N]), np.zeros([0], int)), {}, np.zeros(N), np.zeros(N, bool), 3, 1.0
        )


def test_served_blend_fills_cold_items_popularity_and_keeps_no_table_without_alpha():
    x = item_item.interaction_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    counts = np.array([1, 2, 0])
    vectors = np.array([[1.0, 0], [0, 1], [0.1, 1]])  # item 2 (no positives) is nearest item 1
    served = blend.served_blend(blend.Blend(), x, counts, vectors, neighbours=5, pop_scale=0.1)
    assert served.table.rows.shape == (3, 0)
    assert served.fill.cold_rows.tolist() == [2]
    lp = blend.log_prob(counts)
    assert lp[0] == pytest.approx(np.log(1 / 3))
    assert lp[2] == pytest.approx(np.log(1 / 3))  # an unseen item counts once
    assert lp[1] < served.log_prob[2] < lp[0] or lp[0] < served.log_prob[2] < lp[1]  # between its neighbours
    with_table = blend.served_blend(blend.Blend(alpha=0.5), x, counts, vectors, neighbours=5, pop_scale=0.1)
    assert with_table.table.rows.shape == (3, 5)
    assert with_table.summary()["neighbours"] == 5 and with_table.summary()["alpha"] == 0.5


def _cold_catalog(cold_share: float, seed: int = 2, cold_items: int = 10):
    """The last `cold_items` items are cold and the towers score them 0.3 lower than their warm look-alikes
    (as the text-only vector of an item the towers never saw does); `cold_share` of the users want one of
    them. Returns (validation, is_cold)."""
    rng = np.random.default_rng(seed)
    is_cold = np.arange(N) >= N - cold_items
    targets = rng.integers(0, N - cold_items, size=USERS)
    wanting = int(cold_share * USERS)
    targets[:wanting] = rng.integers(N - cold_items, N, size=wanting)
    scores = rng.normal(scale=0.3, size=[USERS, N]).astype(np.float32)
    scores[np.arange(USERS), targets] += 0.7
    scores[:, is_cold] -= 0.3
    return _validation(scores, targets), is_cold


def _replay(validation, is_cold) -> blend.ColdReplay:
    table = item_item.NeighbourTable(np.zeros([N, 0], np.int32), np.zeros([N, 0], np.float32))
    fill = item_item.text_fill(np.eye(N), ~is_cold, 3)
    return blend.ColdReplay(validation, table, fill, np.zeros(N, np.float32), np.zeros(N, bool), is_cold)


@pytest.mark.parametrize("cold_targets", [True, False])
def test_choose_cold_offsets_cold_items_only_when_their_users_gain(cold_targets):
    replays = [_replay(*_cold_catalog(0.2 if cold_targets else 0.0, seed)) for seed in (2, 3)]
    warm = blend.Blend(gamma=0.25)
    chosen, trials = blend.choose_cold(replays, warm, 5, 1.0)
    assert dataclasses.replace(chosen, cold_gain=1.0, cold_offset=0.0) == warm  # the warm mix is kept
    assert len(trials) == len(blend.COLD_OFFSETS) and trials[0].blend == chosen  # alpha 0: no gain to try
    plain = next(t for t in trials if t.blend == warm)
    if cold_targets:
        assert chosen.cold_offset > 0
        assert trials[0].cold_recall > plain.cold_recall + 0.1
        assert trials[0].objective > plain.objective
    else:
        assert chosen == warm  # nothing to gain: an offset only pushes warm targets down
        assert np.isnan(plain.cold_recall)


def test_choose_cold_gains_the_borrowed_item_item_score_when_cold_targets_follow_the_history():
    # A user's last item h (10..19) has two item-item neighbours, h - 10 (never wanted, weight 1) and h + 10
    # (the warm users' target, weight 2); the cold item h + 20 is the text twin of h - 10. In a list of two
    # the warm target always leads; at gain 1 the cold twin ties with h - 10 and the noise decides, at
    # gain > 1 it takes the second place, which the cold half of the users want, at no cost to the others.
    rng = np.random.default_rng(5)
    last = rng.integers(10, 20, size=USERS)
    targets = np.where(np.arange(USERS) % 2 == 0, last + 20, last + 10)
    rows = np.full([N, 2], item_item.PAD, np.int32)
    rows[10:20] = np.stack([np.arange(0, 10), np.arange(20, 30)], 1)
    weights = np.where(rows >= 0, 1.0, 0.0).astype(np.float32)
    weights[:, 1] *= 2.0
    table = item_item.NeighbourTable(rows, weights)
    is_cold = np.arange(N) >= 30
    fill = item_item.TextFill(
        np.arange(30, 40, dtype=np.int32),
        np.arange(0, 10, dtype=np.int32)[:, None],
        np.ones([10, 1], np.float32),
    )
    history = np.stack([np.full(USERS, item_item.PAD), last], 1)
    validation = _validation(rng.normal(scale=0.01, size=[USERS, N]), targets, history)
    replay = blend.ColdReplay(validation, table, fill, np.zeros(N, np.float32), np.zeros(N, bool), is_cold)
    warm = blend.Blend(alpha=1.0)
    chosen, trials = blend.choose_cold([replay], warm, 2, 1.0, offsets=(0.0,))
    assert chosen.cold_gain > 1.0
    plain = next(t for t in trials if t.blend == warm)
    assert plain.cold_recall < 0.6 and trials[0].cold_recall > 0.95
    assert trials[0].warm_recall == plain.warm_recall == 1.0


def test_choose_cold_keeps_the_warm_recall_it_may_lose_to_a_bound():
    # Half the catalog is cold and a tenth of the users want a cold item: the offset with the best objective
    # fills every list with cold items and costs more than COLD_MAX_RECALL_LOSS of the recall; a smaller one
    # is taken.
    validation, is_cold = _cold_catalog(0.1, 2, cold_items=20)
    chosen, trials = blend.choose_cold([_replay(validation, is_cold)], blend.Blend(), 5, 1.0)
    plain = next(t for t in trials if t.blend == blend.Blend())
    floor = (1 - blend.COLD_MAX_RECALL_LOSS) * plain.warm_recall
    unbounded = max(trials, key=lambda t: t.objective)
    assert unbounded.warm_recall < floor  # without the bound this one would win
    assert trials[0].blend == chosen and trials[0].warm_recall >= floor
    assert 0 < chosen.cold_offset < unbounded.blend.cold_offset


def test_the_cold_users_hits_pay_for_the_warm_users_loss_only_as_far_as_the_catalog_has_new_items():
    # A fifth of the users want a cold item: at offset 0.3 their hits lift the pooled recall above the
    # plain one while the other users lose more than the bound allows. A catalog without new items
    # (new_share 0) bounds the warm users' recall alone and takes a smaller offset; one whose new share is
    # the replay's cold share weighs the two as the replay pooled them, and takes the large one.
    validation, is_cold = _cold_catalog(0.2, 2)
    replays = [_replay(validation, is_cold)]
    chosen, trials = blend.choose_cold(replays, blend.Blend(), 5, 1.0)
    plain = next(t for t in trials if t.blend == blend.Blend())
    large = next(t for t in trials if t.blend.cold_offset == 0.3)
    assert large.recall > plain.recall and large.objective > trials[0].objective
    assert large.warm_recall < (1 - blend.COLD_MAX_RECALL_LOSS) * plain.warm_recall
    assert 0 < chosen.cold_offset < 0.3
    assert trials[0].warm_recall >= (1 - blend.COLD_MAX_RECALL_LOSS) * plain.warm_recall

    cold_share = float(np.mean(is_cold[validation.targets]))
    assert large.expected_recall(cold_share) == pytest.approx(large.recall)
    with_new, _ = blend.choose_cold(replays, blend.Blend(), 5, 1.0, new_share=cold_share)
    assert with_new.cold_offset == 0.3


def test_new_items_left_out_of_the_replay_no_longer_hold_the_cold_terms_back():
    # Half the catalog is cold, a tenth of the users want one of 3 of those items, nobody the other 17: at
    # any useful offset these crowd the warm targets out and the bound holds the offset back. Taken for new
    # arrivals (likely_new_items) and left out of the lists (-inf, as train.choose_cold_terms does), they
    # no longer count against it, and a larger offset is chosen.
    rng = np.random.default_rng(2)
    is_cold = np.arange(N) >= N - 20
    targets = rng.integers(0, N - 20, size=USERS)
    targets[: USERS // 10] = rng.integers(N - 20, N - 17, size=USERS // 10)
    scores = rng.normal(scale=0.3, size=[USERS, N]).astype(np.float32)
    scores[np.arange(USERS), targets] += 0.7
    # As _cold_catalog, text-only vectors score 0.3 lower. (Were they close to the warm items', a small offset
    # would already reach the wanted three and the larger one stop paying: the property needs cold items to
    # need a lift.)
    scores[:, is_cold] -= 0.3
    replay = _replay(_validation(scores, targets), is_cold)
    bounded, bounded_trials = blend.choose_cold([replay], blend.Blend(), 5, 1.0)
    new = blend.likely_new_items(np.where(is_cold, 0, 5), targets, seed=0)
    assert new.sum() == 17 and not new[targets].any()  # no singletons: the profile explains no zero
    scores[:, new] = -np.inf
    chosen, trials = blend.choose_cold(
        [_replay(_validation(scores, targets), is_cold)], blend.Blend(), 5, 1.0
    )
    assert chosen.cold_offset > bounded.cold_offset
    assert trials[0].cold_recall > bounded_trials[0].cold_recall
    assert all(np.isfinite([t.recall, t.cold_recall, t.objective]).all() for t in trials)


def test_choose_cold_pools_the_users_of_every_replay():
    (one, is_cold), (other, _) = _cold_catalog(0.2, 2), _cold_catalog(0.0, 3)
    only = ((1.0,), (0.0,))
    pooled = blend.choose_cold([_replay(one, is_cold), _replay(other, is_cold)], blend.Blend(), 5, 1.0, *only)
    alone = blend.choose_cold([_replay(one, is_cold)], blend.Blend(), 5, 1.0, *only)
    other_alone = blend.choose_cold([_replay(other, is_cold)], blend.Blend(), 5, 1.0, *only)
    assert pooled[1][0].recall == pytest.approx((alone[1][0].recall + other_alone[1][0].recall) / 2)
    assert pooled[1][0].cold_recall == pytest.approx(alone[1][0].cold_recall)  # only `one` has cold targets


def test_pseudo_cold_draws_are_disjoint_shares_of_the_items_with_positives():
    counts = np.array([0, 3, 1, 0, 7, 2, 5, 1, 1, 4, 0, 9])  # 9 items with positives
    draws = blend.pseudo_cold_draws(counts, 0.34, 3, seed=4)
    assert [d.sum() for d in draws] == [3, 3, 3] and not np.any(np.sum(draws, axis=0) > 1)
    assert not np.any(np.sum(draws, axis=0)[counts == 0])
    assert all(
        (a == b).all() for a, b in zip(draws, blend.pseudo_cold_draws(counts, 0.34, 3, 4), strict=True)
    )
    assert len(blend.pseudo_cold_draws(counts, 0.34, 5, seed=4)) == 3  # no more items to draw
    x = item_item.interaction_matrix(np.arange(12), np.arange(12), 12)
    emptied = blend.without_items(x, draws[0])
    assert np.asarray(emptied.sum(axis=0)).reshape(-1).tolist() == (~draws[0]).astype(float).tolist()


def test_unseen_expected_is_chao1_from_the_items_with_one_and_two_positives():
    counts = np.array([0, 1, 1, 1, 2, 5, 9])  # f1 = 3, f2 = 1
    assert blend.unseen_expected(counts) == pytest.approx(3 * 2 / (2 * 2))
    assert blend.unseen_expected(np.array([0, 0, 4, 5])) == 0.0  # no singletons: no item unseen by chance


def test_likely_new_items_are_the_items_without_positives_the_profile_does_not_explain():
    # A 5-core-like profile (no item with 1 or 2 positives) explains no zero: every untaken item is new,
    # except one a validation user wants.
    counts = np.array([0, 0, 0, 5, 7, 6, 0])
    new = blend.likely_new_items(counts, targets=np.array([6, -1, 3]), seed=0)
    assert new.tolist() == [True, True, True, False, False, False, False]
    # A thin tail (many singletons) explains its zeros: none is taken for new.
    tail = np.array([0] * 4 + [1] * 6 + [2] * 2 + [9])  # expected unseen 6·5/(2·3) = 5 ≥ 4 observed
    assert not blend.likely_new_items(tail, np.array([-1]), seed=0).any()
    # In between, as many as the excess, drawn among the untaken items, the same for the same seed.
    mixed = np.array([0] * 10 + [1] * 6 + [2] * 2 + [9])  # 10 observed − 5 expected
    drawn = blend.likely_new_items(mixed, np.array([-1]), seed=3)
    assert drawn.sum() == 5 and not drawn[mixed > 0].any()
    np.testing.assert_array_equal(drawn, blend.likely_new_items(mixed, np.array([-1]), seed=3))


def test_likely_new_items_are_the_unseen_ones_when_the_data_rates_items_below_the_threshold():
    counts = np.array([0, 0, 0, 5, 7, 6, 0, 0])
    seen = np.array([True, False, False, True, True, True, True, False])  # 0 and 6: rated, never liked
    new = blend.likely_new_items(counts, targets=np.array([7, -1]), seed=0, seen=seen)
    assert new.tolist() == [False, True, True, False, False, False, False, False]  # 7: a validation target
    # Seen only where there are positives: nothing told apart, the popularity profile decides as before.
    np.testing.assert_array_equal(
        blend.likely_new_items(counts, np.array([7, -1]), 0, seen=counts > 0),
        blend.likely_new_items(counts, np.array([7, -1]), 0),
    )


def test_served_blend_neither_fills_nor_offsets_an_item_seen_without_a_positive():
    x = item_item.interaction_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 4)
    counts = np.array([1, 2, 0, 0])
    vectors = np.array([[1.0, 0], [0, 1], [0.1, 1], [0.2, 1]])
    seen = np.array([True, True, True, False])  # item 2 was rated below the threshold, item 3 is new
    cold = blend.Blend(alpha=0.5, cold_offset=0.2)
    served = blend.served_blend(cold, x, counts, vectors, neighbours=5, pop_scale=0.1, seen=seen)
    assert served.fill.cold_rows.tolist() == [3]
    assert served.item_offset().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.2])
    assert served.log_prob[2] == pytest.approx(blend.log_prob(counts)[2])  # the floor, not its neighbours'
    assert served.log_prob[3] > served.log_prob[2]
    assert served.summary()["text_filled_items"] == 1


def test_served_blend_gains_the_cf_fill_and_offsets_cold_items():
    x = item_item.interaction_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    counts = np.array([1, 2, 0])
    vectors = np.array([[1.0, 0], [0, 1], [0.1, 1]])
    plain = blend.served_blend(blend.Blend(alpha=0.5), x, counts, vectors, neighbours=5, pop_scale=0.1)
    cold = blend.Blend(alpha=0.5, cold_gain=4.0, cold_offset=0.2)
    served = blend.served_blend(cold, x, counts, vectors, neighbours=5, pop_scale=0.1)
    np.testing.assert_allclose(served.fill.weights, 4.0 * plain.fill.weights)
    np.testing.assert_array_equal(served.log_prob, plain.log_prob)  # popularity: still a weighted mean
    assert served.item_offset().tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert plain.item_offset().tolist() == [0.0, 0.0, 0.0]
    assert served.summary()["cold_gain"] == 4.0 and served.summary()["cold_offset"] == 0.2


def test_choose_serves_lists_longer_than_the_candidate_pool():
    counts, (scores, targets), _ = _popularity_catalogs()
    big = 3 * N  # lists of 110 of 120 items: more than a pool of 100 per part
    noise = np.random.default_rng(1).normal(scale=0.1, size=[USERS, big]).astype(np.float32)  # no ties
    wide = np.tile(scores, (1, 3)) + noise
    log_prob = blend.log_prob(np.tile(counts, 3))
    history = np.full([USERS, 3], item_item.PAD)
    validation = blend.Validation(wide, history, targets, sp.csr_matrix((USERS, big)))
    _, trials = blend.choose(validation, {}, log_prob, np.zeros(big, bool), 110, 1.0)
    for trial in trials:
        full = np.argpartition(-(wide + trial.blend.gamma * log_prob), 109, axis=1)[:, :110]
        assert trial.recall == pytest.approx(np.mean((full == targets[:, None]).any(axis=1)))
