"""Synthetic FineAll checkpoints saved the way the release's FineAll scripts save them.

`NextitNet_TF_FineAll.py` / `GRec_TF_FineAll.py` (facts in the shared docs) restore the
pre-training graph (with its `Adam` slots and `beta1_power`/`beta2_power`), add the
`target-item` scope, train everything with an optimizer named `Adam2` (slots
`<var>/Adam2`, `<var>/Adam2_1`, and `beta1_power_1`/`beta2_power_1` since the names are
taken) and save with a `tf.compat.v1.train.Saver` (`.index`, `.data`, `.meta`).
Written here from those facts, with the release's variable names:
- NextitNet FineAll: causal blocks; the graph drops the input's last column itself (the
  loader feeds `[s1..sn, 0]`); user vector = the last position (`Mean` of its slice).
- GRec FineAll: non-causal (SAME) blocks on `[s1..sn]`; user vector = `reduce_mean` over
  positions.
"""

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def _variable(name, shape, initializer):
    return v1.get_variable(name, shape, initializer=initializer, use_resource=False)


def _conv(inputs, name, rate, kernel_size, causal):
    channels = int(inputs.shape[-1])
    with v1.variable_scope(name):
        weight = _variable("weight", [1, kernel_size, channels, channels],
                           v1.truncated_normal_initializer(stddev=0.2))
        bias = _variable("bias", [channels], v1.random_normal_initializer(stddev=0.1))
        if causal:  # explicit left padding: the Pad op the converter reads "causal" from
            inputs = tf.pad(inputs, [[0, 0], [(kernel_size - 1) * rate, 0], [0, 0]])
        out = tf.nn.atrous_conv2d(tf.expand_dims(inputs, 1), weight, rate,
                                  padding="VALID" if causal else "SAME")
        return tf.squeeze(out + bias, [1])


def _layer_norm(inputs, name):
    channels = int(inputs.shape[-1])
    with v1.variable_scope(name):
        gamma = _variable("gamma", [channels], v1.random_uniform_initializer(0.5, 1.5))
        beta = _variable("beta", [channels], v1.random_normal_initializer(stddev=0.1))
        mean, variance = tf.nn.moments(inputs, [-1], keepdims=True)
        return (inputs - mean) / tf.sqrt(variance + 1e-8) * gamma + beta


def _block(inputs, index, dilation, kernel_size, causal):
    with v1.variable_scope(f"nextitnet_residual_blockdecoder_layer_{index}_{dilation}"):
        hidden = tf.nn.relu(_layer_norm(
            _conv(inputs, "dilated_conv1", dilation, kernel_size, causal), "layer_norm1"))
        hidden = tf.nn.relu(_layer_norm(
            _conv(hidden, "dilated_conv2", 2 * dilation, kernel_size, causal), "layer_norm2"))
        return inputs + hidden


def make_fineall_checkpoint(prefix, family, vocab_size=175, num_targets=32, channels=16,
                            dilations=(1, 4), kernel_size=3, width=9, steps=3, seed=0):
    """Train a tiny FineAll model of `family` ("nextitnet" or "grec") for a few steps with
    the release's two optimizers and save it at `prefix`; returns the saved prefix."""
    causal = family == "nextitnet"
    if family not in ("nextitnet", "grec"):
        raise ValueError(family)
    rng = np.random.RandomState(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        feed = v1.placeholder(tf.int32, [None, None], name="itemseq_input")
        embeddings = _variable("allitem_embeddings", [vocab_size, channels],
                               v1.truncated_normal_initializer(stddev=0.5))
        ids = feed[:, :-1] if causal else feed  # the causal graph drops the last column
        hidden = tf.nn.embedding_lookup(embeddings, ids)
        for index, dilation in enumerate(dilations):
            hidden = _block(hidden, index, dilation, kernel_size, causal)
        # the pre-training head and loss the FineAll scripts restore (Adam, then unused)
        if causal:
            weight = _variable("logits/weight", [1, 1, channels, vocab_size],
                               v1.truncated_normal_initializer(stddev=0.02))
            bias = _variable("logits/bias", [vocab_size], v1.zeros_initializer())
            logits = tf.squeeze(tf.nn.conv2d(tf.expand_dims(tf.nn.relu(hidden), 1), weight,
                                             [1, 1, 1, 1], "SAME"), [1]) + bias
            labels = feed[:, 1:]
        else:
            weight = _variable("softmax_w", [vocab_size, channels],
                               v1.random_normal_initializer(stddev=0.01))
            bias = _variable("softmax_b", [vocab_size], v1.constant_initializer(0.1))
            logits = tf.einsum("btc,vc->btv", hidden, weight) + bias
            labels = feed
        pretrain_loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        pretrain_op = v1.train.AdamOptimizer(1e-2).minimize(pretrain_loss)
        if causal:
            user = tf.reduce_mean(hidden[:, -1:, :], 1)  # "Mean": the last position
        else:
            user = tf.reduce_mean(hidden, 1)             # "Mean": GRec FineAll's average
        with v1.variable_scope("target-item"):
            targets = _variable("allitem_embeddings_target", [num_targets, channels],
                                v1.truncated_normal_initializer(stddev=0.5))
            positive = v1.placeholder(tf.int32, [None], name="itemseq_input_pos")
            negative = v1.placeholder(tf.int32, [None], name="itemseq_input_neg")
            pos_score = tf.reduce_sum(user * tf.gather(targets, positive), 1)
            neg_score = tf.reduce_sum(user * tf.gather(targets, negative), 1)
            loss = tf.reduce_mean(tf.nn.softplus(-pos_score) + tf.nn.softplus(neg_score))
            label = v1.placeholder(tf.int32, [None, None], name="itemseq_input_target_label")
            scores = tf.matmul(tf.expand_dims(user, 1),
                               tf.transpose(tf.gather(targets, label), [0, 2, 1]))
            tf.nn.top_k(tf.reshape(scores, [tf.shape(label)[0], -1]), k=5, name="top-k")
        finetune_op = v1.train.AdamOptimizer(1e-2, name="Adam2").minimize(loss)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            length = width + 1 if causal else width
            for _ in range(steps):
                batch = rng.randint(1, vocab_size, (8, length)).astype("int32")
                session.run(pretrain_op, {feed: batch})
                session.run(finetune_op, {feed: batch,
                                          positive: rng.randint(1, num_targets, 8),
                                          negative: rng.randint(1, num_targets, 8)})
            return saver.save(session, prefix)
