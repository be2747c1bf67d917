"""Exact next-item top-k for a few users over a large catalogue, from an int8 copy of the head.

Scoring every item in float32 reads the whole head per request (at the paper's 645K
items x 256 channels, 4 bytes each), memory traffic no kernel avoids, too slow for one
user's request on a small CPU machine. `Int8CandidateIndex` keeps the head's rows
also as int8 (one scale per row: a quarter of the bytes) and answers in three steps:

1. Candidates (one XLA-compiled function per history, shape `[1, C]`): the query is
   quantized to int8 too, every row gets an int8 dot product and from it a guaranteed
   upper bound of its float32 logit: `|x.w - x'.w'| <= |x| |w - w'| + |x - x'| |w'|`
   (Cauchy-Schwarz; `|w - w'|` and `|w'|` stored per row, rounded up) plus a margin for
   float32 rounding. The `CANDIDATES` rows of highest bound are kept.
2. The candidates are re-scored from the float32 head with the same product (op and
   layout) as the whole-catalogue ranking, on the same (not XLA-compiled) hidden state,
   so their scores are bit for bit those of the float32 export, and their top k taken
   (candidates in id order, so ties go to the lower id as in `tf.math.top_k` over the
   whole row): the float32 export's ids, in its order, near-ties included.
3. Certificate: when the k-th exact score is above the highest bound among the rows left
   out, no row left out can be in the top k and the answer is the float32 model's. When
   it is not (a near-tie at the boundary, a non-finite input), and for batches above
   `MAX_BATCH` or k above `CANDIDATES`, the whole catalogue is scored in float32, slice
   by slice (`chunked_ranking.top_k_in_chunks`): the answer is never approximate, only
   sometimes slower.

The int8 product is fast only when XLA compiles it (TF's own int8 kernels on CPU are
slower; BUILD_NOTES lists what was compared), so an export with this index needs XLA
where it is served: `tensorflow_model_server --xla_cpu_compilation_enabled=true` (off by
default in TF Serving; without it the model fails at load, on its warm-up requests).
That and its size (+25% of the head's bytes) are why it is opt-in
(`python -m peterrec_tf.export --next_item_index=int8`).
"""

import numpy as np
import tensorflow as tf

from peterrec_tf.training import chunked_ranking

#: Rows re-scored exactly per history.
CANDIDATES = 512
#: Larger batches are scored exactly in one pass (one matrix product beats B int8 scans).
MAX_BATCH = 4
#: Ids per block when the candidates are picked (`top_k_by_blocks`).
BLOCK = 64
#: Rows quantized at a time when the index is built (bounds the float64 working set).
BUILD_ROWS = 65_536
#: Relative margin for float32 rounding in the bound and in the exact re-scoring: a sum of
#: 256 float32 products errs by at most 256 * 2^-24 ~ 1.5e-5 of |x| |w|; 2^-14 is 4x that.
ROUNDING_MARGIN = 2.0 ** -14


def head_rows(head):
    """The head's weight matrix as `[V, C]` float32 rows: `dot` heads store `[V, C]`,
    `full` heads `[C, V]` (and score `relu(h)`)."""
    kernel = head.kernel.numpy()
    return np.ascontiguousarray(kernel if kernel.shape[0] == head.vocab_size else kernel.T,
                                dtype=np.float32)


def quantize_rows(rows):
    """(int8 rows, scale, |w - w'| rounded up, |w'| rounded up) for float32 `rows` [V, C],
    `w' = scale * int8`, one symmetric scale per row (max |w| / 127; 1 for a zero row)."""
    count = rows.shape[0]
    quantized = np.empty(rows.shape, np.int8)
    scale = np.empty(count, np.float32)
    residual = np.empty(count, np.float32)
    norm = np.empty(count, np.float32)
    for start in range(0, count, BUILD_ROWS):
        block = rows[start:start + BUILD_ROWS].astype(np.float64)
        largest = np.abs(block).max(axis=1)
        row_scale = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(block / row_scale[:, None]), -127, 127)
        approx = q * row_scale[:, None].astype(np.float64)
        stop = start + block.shape[0]
        quantized[start:stop] = q.astype(np.int8)
        scale[start:stop] = row_scale
        # rounded up to the next float32, so the stored bound never undercuts the true one
        residual[start:stop] = np.nextafter(
            np.linalg.norm(block - approx, axis=1).astype(np.float32), np.float32(np.inf))
        norm[start:stop] = np.nextafter(
            np.linalg.norm(approx, axis=1).astype(np.float32), np.float32(np.inf))
    return quantized, scale, residual, norm


class Int8CandidateIndex(tf.Module):
    """int8 rows of a next-item head + per-row bounds; `top_k` answers exactly.

    `head` is the task's Keras head (`FullSoftmaxHead` or `DotProductHead`), `bias` the
    tf.Variable the export stores for the head's bias (read here, not copied), `blocked`
    ids never answered (id 0, padding tokens).
    """

    def __init__(self, head, bias, blocked, name="next_item_index"):
        super().__init__(name=name)
        if head.compute_dtype != "float32":
            raise ValueError(
                f"the int8 index proves its answers against float32 logits; this head computes "
                f"in {head.compute_dtype} (trained with --mixed_precision), so its own ranking "
                "may order near-ties otherwise: export it without --next_item_index")
        rows = head_rows(head)
        quantized, scale, residual, norm = quantize_rows(rows)
        self.vocab_size = int(rows.shape[0])
        self.channels = int(rows.shape[1])
        self.relu_query = type(head).__name__ == "FullSoftmaxHead"  # logits = relu(h) W + b
        self.candidates = min(CANDIDATES, self.vocab_size)
        self.blocked = sorted({int(b) for b in blocked} | {0})
        self.rows = tf.Variable(quantized, trainable=False, name="rows_int8")
        self.row_scale = tf.Variable(scale, trainable=False, name="row_scale")
        self.residual_norm = tf.Variable(residual, trainable=False, name="residual_norm")
        self.row_norm = tf.Variable(norm, trainable=False, name="row_norm")
        self.bias = bias
        # compiled apart from the query's quantization: XLA fuses an int8 cast computed in
        # the same cluster into the product's loop and recomputes it per row
        self._compiled_bounds = tf.function(
            self._upper_bounds, jit_compile=True,
            input_signature=[tf.TensorSpec([1, self.channels], tf.int8),
                             tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32),
                             tf.TensorSpec([], tf.float32)])

    @property
    def nbytes(self):
        return sum(int(np.prod(v.shape)) * v.dtype.size
                   for v in (self.rows, self.row_scale, self.residual_norm, self.row_norm))

    def _upper_bounds(self, query8, query_scale, query_norm, query_error):
        """Upper bounds `[V]` of every row's float32 logit (-inf for blocked ids) for one
        query quantized as `query8` `[1, C]` int8 x `query_scale`, of norm `query_norm`,
        quantization error of norm `query_error`. Its top rows are taken outside XLA: XLA
        lowers a TopK after these element-wise ops to a whole sort, far slower than TF's
        kernel (BUILD_NOTES)."""
        products = tf.linalg.matmul(query8, self.rows, transpose_b=True,
                                    output_type=tf.int32)[0]  # exact in int32
        bias = tf.convert_to_tensor(self.bias)
        approx = query_scale * self.row_scale * tf.cast(products, tf.float32) + bias
        # |x.w - x'.w'| <= |x||w - w'| + |x - x'||w'|, plus float32 rounding of both sides
        upper = (approx + query_norm * self.residual_norm + query_error * self.row_norm
                 + ROUNDING_MARGIN * (query_norm * (self.row_norm + self.residual_norm)
                                      + tf.abs(bias) + tf.abs(approx)))
        upper = tf.tensor_scatter_nd_update(
            upper, [[b] for b in self.blocked],
            tf.fill([len(self.blocked)], tf.constant(-np.inf, tf.float32)))
        return upper

    def top_k(self, head, hidden, k, exact, excluded=None):
        """(scores `[B, k]`, ids `[B, k]` int32) of the k highest logits of `head` for
        `hidden` `[B, C]`, blocked ids never chosen; `exact()` computes the same by
        scoring every row (the fallback). `excluded` `[B, E]`: ids that are no answer for
        that row (-1 pads; `exact` must exclude them too). Run inside the task's variable
        scope (the re-scoring reads the head's float32 weights through `rescore`)."""
        hidden = tf.cast(hidden, tf.float32)
        batch = tf.shape(hidden)[0]
        usable = (batch <= MAX_BATCH) & (k <= self.candidates)

        def certified():
            values, ids, proven = self.candidate_top_k(head, hidden, k, excluded)
            return tf.cond(proven, lambda: (values, ids), exact)

        return tf.cond(usable, certified, exact)

    def rescore(self, head, hidden, ids):
        """float32 logits `[B, K]` of each row's candidate `ids` `[B, K]`, bit for bit those
        of the whole-catalogue product: the same 2-D `MatMul` layout as the head's own
        `call` / `logits_range` (`h @ W^T + b` over `[N, C]` rows, or `relu(h) @ W + b`
        over `[C, N]` columns), here over the `B * K` gathered candidates of all rows, each
        row keeping its own block. (An einsum over per-row gathers, `head.logits_at`,
        rounds differently in a graph, which reorders near-equal items.) `B * B * K`
        products: fine for the `MAX_BATCH` rows this path serves."""
        rows, count = tf.shape(ids)[0], tf.shape(ids)[1]
        flat = tf.reshape(ids, [-1])
        bias = tf.gather(head.bias, flat)
        if self.relu_query:  # FullSoftmaxHead: kernel [C, V]
            products = tf.matmul(tf.nn.relu(hidden), tf.gather(head.kernel, flat, axis=1)) + bias
        else:  # DotProductHead: kernel [V, C]
            products = tf.matmul(hidden, tf.transpose(tf.gather(head.kernel, flat, axis=0))) + bias
        products = tf.reshape(tf.cast(products, tf.float32), [rows, rows, count])
        return tf.gather(products, tf.range(rows), axis=1, batch_dims=1)

    def candidate_top_k(self, head, hidden, k, excluded=None):
        """(scores, ids, proven): the top k among each row's candidates, and whether the
        certificate shows them to be the top k of the whole catalogue for every row.
        Excluded candidates score -inf: the certificate still holds (the rows left out
        stay below the bound, excluded or not); a row left with fewer than k answering
        candidates has -inf as its k-th score and is never proven."""
        query = tf.nn.relu(hidden) if self.relu_query else hidden
        upper = tf.map_fn(lambda row: self._compiled_bounds(*quantize_query(row[None, :])),
                          query, fn_output_signature=tf.TensorSpec([self.vocab_size], tf.float32))
        bounds, ids = top_k_by_blocks(upper, self.candidates)
        outside = bounds[:, -1]  # every row left out has a logit at most this
        ids = tf.sort(ids, axis=1)  # equal scores: the lower id first, as over whole rows
        logits = self.rescore(head, hidden, ids)
        blocked = tf.reduce_any(ids[:, :, None] == tf.constant(self.blocked, tf.int32), axis=2)
        if excluded is not None:
            blocked |= chunked_ranking.is_excluded(ids, excluded)
        logits = tf.where(blocked, tf.constant(-np.inf, tf.float32), logits)
        values, position = tf.math.top_k(logits, k)
        chosen = tf.gather(ids, position, batch_dims=1)
        kth = tf.cond(k > 0, lambda: values[:, tf.maximum(k, 1) - 1],
                      lambda: tf.fill([tf.shape(hidden)[0]], tf.constant(np.inf, tf.float32)))
        proven = (tf.reduce_all(kth > outside)
                  & tf.reduce_all(tf.math.is_finite(hidden)))
        return values, chosen, proven


def top_k_by_blocks(values, k, block=BLOCK):
    """`tf.math.top_k(values, k)` for `values` `[B, V]` up to ties: the k largest lie in the
    k blocks of `block` ids with the largest maxima, so only those blocks are ranked (at
    645K ids: 10K maxima and 32K values instead of a pass of top-k over 645K). Whatever it
    picks among ties, no value left out exceeds the k-th returned,
    which is all the certificate needs. Padding ids (>= V) come back as id 0 (blocked)."""
    size = values.shape[-1]
    if size is None or size <= block * k:
        return tf.math.top_k(values, k)
    rows = tf.shape(values)[0]
    padded = tf.pad(values, [[0, 0], [0, -size % block]], constant_values=-np.inf)
    blocks = tf.reshape(padded, [rows, -1, block])
    _, chosen = tf.math.top_k(tf.reduce_max(blocks, axis=2), k)  # [B, k]
    members = tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [rows, k * block])
    top, position = tf.math.top_k(members, k)
    ids = tf.gather(chosen, position // block, batch_dims=1) * block + position % block
    return top, tf.where(ids < size, ids, 0)


def quantize_query(query):
    """(int8 `[1, C]`, scale, |query|, |query - scale * int8|) for one float32 query `[1, C]`."""
    query_scale = tf.maximum(tf.reduce_max(tf.abs(query)), 1e-30) / 127.0
    rounded = tf.clip_by_value(tf.round(query / query_scale), -127.0, 127.0)
    return (tf.cast(rounded, tf.int8), query_scale, tf.norm(query),
            tf.norm(query - rounded * query_scale))

