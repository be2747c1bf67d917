"""The int8 next-item candidate index answers exactly what the float32 head answers: its
certificate is checked on heads where int8 reorders the boundary, a bound without the
quantization error is shown to give wrong answers, and an export with the index (loaded
the way Serving loads it) answers like the export without it."""

import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.layers.heads import DotProductHead, FullSoftmaxHead
from peterrec_tf.serving import candidate_index
from peterrec_tf.serving.candidate_index import Int8CandidateIndex, quantize_rows
from peterrec_tf.training.chunked_ranking import top_k_in_chunks


def make_head(kind, vocab, channels, rng, scale=0.1):
    head = (DotProductHead if kind == "dot" else FullSoftmaxHead)(vocab)
    head.build((None, channels))
    shape = tuple(head.kernel.shape)
    head.kernel.assign(rng.standard_normal(shape).astype("float32") * scale)
    head.bias.assign(rng.standard_normal(vocab).astype("float32") * 0.01)
    return head


def index_of(head, blocked=(0,)):
    bias = tf.Variable(head.bias.numpy())
    return Int8CandidateIndex(head, bias, blocked)


def whole_row_top_k(head, hidden, k, blocked):
    logits = head(hidden[:, None, :])[:, 0, :].numpy().astype("float64")
    logits[:, list(blocked)] = -np.inf
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # ties: lower id first
    return np.take_along_axis(logits, order, 1), order


def test_quantized_bounds_hold_row_by_row():
    """|w - w'| and |w'| as stored are upper bounds of the true norms (rounded up)."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((1000, 48)).astype("float32") * np.logspace(-3, 1, 1000)[:, None].astype("float32")
    rows[7] = 0  # a zero row gets scale 1, not a division by zero
    q, scale, residual, norm = quantize_rows(rows)
    approx = q.astype("float64") * scale[:, None]
    assert np.all(np.linalg.norm(rows - approx, axis=1) <= residual)
    assert np.all(np.linalg.norm(approx, axis=1) <= norm)
    assert np.all(np.abs(q) <= 127) and scale[7] == 1 and residual[7] < 1e-40


@pytest.mark.parametrize("kind", ["dot", "full"])
def test_index_answers_the_float32_top_k_and_proves_it_on_ordinary_queries(kind):
    rng = np.random.default_rng(1)
    head = make_head(kind, 5000, 64, rng)
    index = index_of(head, blocked=(0, 3))
    hidden = tf.constant(rng.standard_normal((3, 64)).astype("float32"))
    for k in (1, 10, 100):
        values, ids, proven = index.candidate_top_k(head, hidden, tf.constant(k))
        assert bool(proven), f"k={k}: an ordinary query should be certified"
        want_values, want_ids = whole_row_top_k(head, hidden, k, (0, 3))
        np.testing.assert_array_equal(ids.numpy(), want_ids)
        np.testing.assert_allclose(values.numpy(), want_values, rtol=1e-5, atol=1e-6)
        exact = lambda: top_k_in_chunks(head, hidden, tf.constant(k), [0, 3], 700)  # noqa: E731
        values2, ids2 = index.top_k(head, hidden, tf.constant(k), exact)
        np.testing.assert_array_equal(ids2.numpy(), want_ids)


def near_tie_head(rng, vocab=400, channels=16):
    """Rows whose float32 scores differ by less than int8 can resolve: the int8 order of
    the boundary is arbitrary, so only the certificate (and its fallback) keeps it exact."""
    head = DotProductHead(vocab)
    head.build((None, channels))
    base = rng.standard_normal(channels).astype("float32")
    base /= np.abs(base).max()
    rows = base[None, :] + rng.standard_normal((vocab, channels)).astype("float32") * 1e-4
    head.kernel.assign(rows)
    head.bias.assign(np.zeros(vocab, "float32"))
    return head


def test_a_boundary_int8_cannot_resolve_falls_back_to_the_exact_answer(monkeypatch):
    monkeypatch.setattr(candidate_index, "CANDIDATES", 8)
    rng = np.random.default_rng(2)
    head = near_tie_head(rng)
    index = index_of(head)
    hidden = tf.constant(np.round(rng.standard_normal((2, 16)) * 40).astype("float32"))  # int8-exact
    want_values, want_ids = whole_row_top_k(head, hidden, 3, (0,))
    _, candidate_ids, proven = index.candidate_top_k(head, hidden, tf.constant(3))
    assert not bool(proven)
    assert not np.array_equal(candidate_ids.numpy(), want_ids)  # the candidates alone are wrong
    exact = lambda: top_k_in_chunks(head, hidden, tf.constant(3), [0], 64)  # noqa: E731
    values, ids = index.top_k(head, hidden, tf.constant(3), exact)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(values.numpy(), want_values, rtol=1e-6)


def hidden_winners_head(vocab=400, channels=16, winners=(300, 301, 302)):
    """Every row is the same int8-exact vector plus, in dimension 1, +0.001 (ordinary rows)
    or +0.003 (the winners): both below half an int8 step, so int8 sees identical rows and
    only the rows' quantization error |w - w'| tells the winners apart."""
    head = DotProductHead(vocab)
    head.build((None, channels))
    base = np.arange(-63, 64, 127 // channels + 1)[:channels].astype("float64") / 127.0
    base[0] = 1.0  # the row's largest: scale 1/127
    rows = np.tile(base, (vocab, 1))
    rows[:, 1] += 0.001
    rows[list(winners), 1] += 0.002
    head.kernel.assign(rows.astype("float32"))
    head.bias.assign(np.zeros(vocab, "float32"))
    query = np.zeros((1, channels), "float32")
    query[0, 1] = 127.0  # int8-exact (scale 1): the query adds no error of its own
    query[0, 0] = 5.0
    return head, tf.constant(query), list(winners)


def test_a_bound_without_the_rows_quantization_error_would_answer_wrongly(monkeypatch):
    """The mutation the certificate exists for: drop |w - w'| from the bound and a head
    whose winners int8 cannot see is 'proven' with wrong ids; with it, exact and proven."""
    monkeypatch.setattr(candidate_index, "CANDIDATES", 8)
    head, query, winners = hidden_winners_head()
    values, ids, proven = index_of(head).candidate_top_k(head, query, tf.constant(3))
    assert bool(proven) and sorted(ids.numpy()[0]) == winners

    monkeypatch.setattr(candidate_index, "ROUNDING_MARGIN", 0.0)
    real = candidate_index.quantize_rows

    def without_residual(rows):
        q, scale, residual, norm = real(rows)
        return q, scale, np.zeros_like(residual), norm
    monkeypatch.setattr(candidate_index, "quantize_rows", without_residual)
    _, ids, proven = index_of(head).candidate_top_k(head, query, tf.constant(3))
    assert bool(proven) and not set(ids.numpy()[0]) & set(winners)


def test_non_finite_queries_large_batches_and_large_k_take_the_exact_path(monkeypatch):
    monkeypatch.setattr(candidate_index, "CANDIDATES", 16)
    rng = np.random.default_rng(3)
    head = make_head("dot", 300, 16, rng)
    index = index_of(head)
    calls = []

    def exact_for(hidden, k):
        def exact():
            calls.append(1)
            return top_k_in_chunks(head, hidden, k, [0], 64)
        return exact

    nan = tf.constant(np.full((1, 16), np.nan, "float32"))
    assert not bool(index.candidate_top_k(head, nan, tf.constant(2))[2])
    big = tf.constant(rng.standard_normal((candidate_index.MAX_BATCH + 1, 16)).astype("float32"))
    _, ids = index.top_k(head, big, tf.constant(4), exact_for(big, tf.constant(4)))
    np.testing.assert_array_equal(ids.numpy(), whole_row_top_k(head, big, 4, (0,))[1])
    one = big[:1]
    _, ids = index.top_k(head, one, tf.constant(40), exact_for(one, tf.constant(40)))
    np.testing.assert_array_equal(ids.numpy(), whole_row_top_k(head, one, 40, (0,))[1])
    assert len(calls) == 2  # eager: each call above ran the exact branch once
    values, ids = index.top_k(head, one, tf.constant(0), exact_for(one, tf.constant(0)))
    assert ids.shape == (1, 0) and len(calls) == 2


def test_top_k_by_blocks_leaves_out_nothing_above_its_kth_value():
    """Picking among the blocks of largest maxima: same values as tf.math.top_k, ids of
    equal values possibly others, padding never returned as a real id."""
    from peterrec_tf.serving.candidate_index import top_k_by_blocks
    rng = np.random.default_rng(6)
    values = rng.standard_normal((3, 10_007)).astype("float32")
    values[1, :5000] = np.round(values[1, :5000])  # many ties
    values[2, 9000:] = -np.inf
    for k in (1, 17, 100):
        top, ids = top_k_by_blocks(tf.constant(values), k, block=16)
        want, _ = tf.math.top_k(values, k)
        np.testing.assert_array_equal(top.numpy(), want.numpy())
        np.testing.assert_array_equal(np.take_along_axis(values, ids.numpy(), 1), top.numpy())
        assert ids.numpy().max() < values.shape[1]
        assert all(len(set(row)) == k for row in ids.numpy())


def test_a_head_computing_below_float32_is_refused():
    """Its own ranking rounds logits to bfloat16: a proof about float32 logits would not be
    a proof about what the model answers."""
    head = DotProductHead(100, dtype="mixed_bfloat16")
    head.build((None, 8))
    with pytest.raises(ValueError, match="computes in bfloat16"):
        Int8CandidateIndex(head, tf.Variable(head.bias.numpy()), [0])


def query_error_winners_head(vocab=400, channels=16, winners=(300, 301, 302)):
    """Int8-exact rows (no row error at all) and a query that is not int8-exact: its
    dimension 1 (0.45) rounds to 0 at its scale of 1, so int8 sees none of it. Winner rows
    carry 1.0 in dimension 1 and a slightly smaller dimension 0 than the ordinary rows, so
    int8 ranks every ordinary row above them while the float32 logits rank them first;
    only the query's error |x - x'| times |w'| tells them apart."""
    head = DotProductHead(vocab)
    head.build((None, channels))
    rows = np.zeros((vocab, channels))
    rows[:, 0] = 0.0965 - 1e-5 * np.arange(vocab)  # ordinary rows: distinct, int8-exact
    rows[list(winners), 0] = 12.0 / 127.0
    rows[list(winners), 1] = 1.0
    head.kernel.assign(rows.astype("float32"))
    head.bias.assign(np.zeros(vocab, "float32"))
    query = np.zeros((1, channels), "float32")
    query[0, 0], query[0, 1] = 127.0, 0.45
    return head, tf.constant(query), list(winners)


def test_a_bound_without_the_querys_quantization_error_would_answer_wrongly(monkeypatch):
    """Drop |x - x'| |w'| from the bound (the query's own quantization error) and a query
    that is not int8-exact is 'proven' with wrong ids; with it, exact and proven."""
    monkeypatch.setattr(candidate_index, "CANDIDATES", 8)
    head, query, winners = query_error_winners_head()
    _, _, residual, _ = quantize_rows(candidate_index.head_rows(head))
    assert residual.max() < 1e-6  # the rows add (almost) no error: the query's is what counts
    want_values, want_ids = whole_row_top_k(head, query, 3, (0,))
    assert sorted(want_ids[0]) == winners
    values, ids, proven = index_of(head).candidate_top_k(head, query, tf.constant(3))
    assert bool(proven)
    np.testing.assert_array_equal(ids.numpy(), want_ids)

    real = candidate_index.quantize_query

    def without_query_error(row):
        query8, scale, norm, _ = real(row)
        return query8, scale, norm, tf.zeros_like(norm)
    monkeypatch.setattr(candidate_index, "quantize_query", without_query_error)
    _, ids, proven = index_of(head).candidate_top_k(head, query, tf.constant(3))
    assert bool(proven) and not set(ids.numpy()[0]) & set(winners)
