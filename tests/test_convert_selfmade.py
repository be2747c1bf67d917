"""Conversion parity on release-like checkpoints made in the test (no ../shared needed):
a tiny FineAll checkpoint trained and saved with tf.compat.v1 the way the release's
FineAll scripts save theirs (tests/release_fineall.py), with random, non-symmetric
[1, k, C, C] conv kernels, converted and compared with its own TF1 graph."""

import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.convert_tf1 import convert_checkpoint
from peterrec_tf.model_dir import load_model_dir
from peterrec_tf.tf1_oracle import run_oracle_batches
from release_fineall import make_fineall_checkpoint
from release_loaders import release_feed


@pytest.mark.parametrize("family,loader", [("nextitnet", "nextitnet_fineall"),
                                           ("grec", "grec_fineall")])
def test_selfmade_fineall_checkpoint_converts_with_parity(family, loader, tmp_path):
    prefix = make_fineall_checkpoint(str(tmp_path / "ckpt" / "model.ckpt"), family,
                                     vocab_size=40, num_targets=12, channels=8,
                                     dilations=(1, 2), steps=2)
    reader = tf.train.load_checkpoint(prefix)
    kernel = reader.get_tensor("nextitnet_residual_blockdecoder_layer_0_1/dilated_conv1/weight")
    assert kernel.shape == (1, 3, 8, 8)
    # a converter that swapped the kernels' input and output channels would differ
    assert np.abs(kernel - kernel.transpose(0, 1, 3, 2)).max() > 0.1
    out = str(tmp_path / "converted")
    convert_checkpoint(prefix, out, max_len=9, log=lambda _: None)
    model, config, _ = load_model_dir(out)
    assert config["framing"] == {"kind": "release_plain", "length": 9}
    rng = np.random.RandomState(5)
    histories = [list(rng.randint(1, 40, n)) for n in (9, 9, 9, 4, 7, 1)]
    [expected] = run_oracle_batches(prefix, [release_feed(histories, loader, 9)])
    framed = model.framing.frame(tf.ragged.constant(histories, dtype=tf.int32)).numpy()
    hidden = model.backbone(framed).numpy()
    scores = model(framed).numpy()
    assert hidden.shape == expected["hidden"].shape
    np.testing.assert_allclose(hidden, expected["hidden"],
                               atol=1e-4 + 1e-5 * np.abs(expected["hidden"]).max(), rtol=0)
    np.testing.assert_allclose(scores, expected["scores"],
                               atol=1e-4 + 1e-5 * np.abs(expected["scores"]).max(), rtol=0)
    np.testing.assert_array_equal(np.argsort(-scores, axis=1, kind="stable")[:, :5],
                                  expected["top_k"].reshape(len(histories), 5))
