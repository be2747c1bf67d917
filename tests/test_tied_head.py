"""The tied head (`head="tied"`, SASRec's tying): the input item embedding scores the next
item, the head owns only its bias, and saving/loading keeps the tie."""

import keras
import numpy as np
import pytest

from peterrec_tf.model_dir import load_model_dir, save_model_dir
from peterrec_tf.models import Backbone, NextItNet, SelfAttentionBackbone

VOCAB = 30


@pytest.mark.parametrize("architecture", ["dilated_cnn", "self_attention"])
def test_tied_logits_read_the_item_embedding_and_survive_saving(architecture, rng, tmp_path):
    keras.utils.set_random_seed(2)
    backbone = (Backbone(VOCAB, channels=8, dilations=(1, 2)) if architecture == "dilated_cnn"
                else SelfAttentionBackbone(VOCAB, channels=8, num_blocks=1, max_positions=10))
    model = NextItNet(backbone, head="tied")
    model.build()
    assert [w.path.split("/")[-1] for w in model.head.weights] == ["bias"]
    model.head.bias.assign(rng.randn(VOCAB).astype("float32"))
    ids = rng.randint(1, VOCAB, (3, 7))
    hidden = backbone.last_position(ids).numpy()
    table = backbone.item_embedding.embeddings.numpy()
    expected = hidden @ table.T + model.head.bias.numpy()
    np.testing.assert_allclose(model.next_item_logits(ids).numpy(), expected, rtol=1e-5, atol=1e-6)
    save_model_dir(str(tmp_path / "m"), model, {"max_len": 7})
    loaded, _, _ = load_model_dir(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.next_item_logits(ids).numpy(),
                                  model.next_item_logits(ids).numpy())
    # the loaded head reads the loaded backbone's table, not a copy
    loaded.backbone.item_embedding.embeddings.assign(np.zeros_like(table))
    np.testing.assert_allclose(loaded.next_item_logits(ids).numpy(),
                               np.tile(model.head.bias.numpy(), (3, 1)), atol=1e-6)


@pytest.mark.parametrize("sampled", [0, 8])
def test_tied_head_learns_planted_transitions(sampled, rng):
    """Next item = (item + 1) mod V, learned through the one shared table (full and
    sampled softmax)."""
    starts = rng.randint(1, VOCAB, (256, 1))
    seqs = (starts + np.arange(12)[None, :] - 1) % (VOCAB - 1) + 1
    x, y = seqs[:, :-1], seqs[:, 1:]
    keras.utils.set_random_seed(0)
    model = NextItNet(SelfAttentionBackbone(VOCAB, channels=16, num_blocks=1, max_positions=11),
                      head="tied", num_sampled=sampled)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=32, epochs=10, verbose=0)
    accuracy = (model.predict(x, verbose=0).argmax(-1) == y).mean()
    assert accuracy > 0.8, accuracy  # chance: 1 in 29
