"""Run an original TF1 `.meta` graph as a ground-truth oracle, in a clean subprocess.

The release's graphs are imported with `tf.compat.v1.train.import_meta_graph` and run in
a v1 Session.  oneDNN must be off (`TF_ENABLE_ONEDNN_OPTS=0`, set before TensorFlow is
imported): with it on, TF 2.21's graph rewrite of the release's hand-written layer norm
makes the oracle's own outputs drift by up to ~2 in hidden units.  Hence the subprocess.

    python -m peterrec_tf.tf1_oracle --checkpoint=PREFIX --input=ids.npz --output=out.npz
"""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np

BLOCK_SCOPE = re.compile(r"^nextitnet_residual_blockdecoder_layer_(\d+)_(\d+)$")


def run_oracle(checkpoint_prefix, item_ids, with_targets=True, timeout=600):
    """Outputs of the TF1 graph for `item_ids` `[B, T]` (int), as a dict of arrays.

    See `run_oracle_batches`, which runs many inputs in one subprocess.
    """
    return run_oracle_batches(checkpoint_prefix, [item_ids], with_targets, timeout)[0]


def run_oracle_batches(checkpoint_prefix, batches, with_targets=True, timeout=600):
    """Like `run_oracle` for a list of id arrays (any shapes), in one subprocess.

    Pre-training graphs: `hidden` `[B, T-1, C]` and `next_item_probs` `[B, V]` (the graph
    drops the last column itself).  Fine-tuned graphs (PeterRec and FineAll): `hidden`
    `[B, L', C]`, `user` `[B, C]` (`Mean:0`, else `Add:0`), and with `with_targets`
    `scores` `[B, N]` against every target and `top_k` (`target-item/top-k:1`). Feed each
    graph what the release's loader for its family feeds it (BUILD_NOTES.md, framing
    table): the causal graphs drop the last column themselves.
    """
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "ids.npz")
        outputs = os.path.join(tmp, "out.npz")
        np.savez(inputs, **{f"item_ids_{i}": np.asarray(ids, dtype=np.int32)
                            for i, ids in enumerate(batches)})
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="")
        command = [sys.executable, "-m", "peterrec_tf.tf1_oracle",
                   f"--checkpoint={checkpoint_prefix}", f"--input={inputs}",
                   f"--output={outputs}", f"--with_targets={with_targets}"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"TF1 oracle failed for {checkpoint_prefix}:\n{done.stderr[-4000:]}")
        results = [{} for _ in batches]
        with np.load(outputs) as data:
            for key in data.files:
                index, name = key.split("/", 1)
                results[int(index)][name] = data[key]
        return results


def _last_block_scope(graph_def):
    blocks = {}
    for node in graph_def.node:
        scope = node.name.split("/")[0]
        match = BLOCK_SCOPE.match(scope)
        if match:
            blocks[int(match.group(1))] = scope
    if not blocks:
        raise ValueError("no nextitnet_residual_blockdecoder_layer_* scope in the graph")
    return blocks[max(blocks)]


def _residual_output(graph_def, scope):
    """The block's final `x + relu(LN2(...))` node: an add in `scope` fed by `scope/Relu_1`."""
    for node in graph_def.node:
        parent, _, leaf = node.name.rpartition("/")
        if parent == scope and leaf.startswith("add") and node.op in ("Add", "AddV2"):
            if any(inp.split(":")[0] == f"{scope}/Relu_1" for inp in node.input):
                return node.name + ":0"
    raise ValueError(f"no residual add found in {scope}")


def _run_graph(session, graph, graph_def, names, last, ids, with_targets):
    if "input_predict" in names:  # pre-training graph: use the prediction branch
        predict_scope = last + "_1" if any(n.startswith(last + "_1/") for n in names) else last
        fetches = {"hidden": _residual_output(graph_def, predict_scope),
                   "next_item_probs": "Softmax:0"}
        return session.run(fetches, {"input_predict:0": ids})
    fetches = {"hidden": _residual_output(graph_def, last)}
    fetches["user"] = "Mean:0" if "Mean" in names else "Add:0"
    feed = {"itemseq_input:0": ids}
    if with_targets and "target-item/MatMul" in names:
        num_targets = int(graph.get_tensor_by_name(
            "target-item/allitem_embeddings_target:0").shape[0])
        feed["target-item/itemseq_input_target_label:0"] = np.tile(
            np.arange(num_targets, dtype=np.int32), (len(ids), 1))
        fetches["scores"] = "target-item/MatMul:0"
        if "target-item/top-k" in names:
            fetches["top_k"] = "target-item/top-k:1"
    for node in graph_def.node:  # boolean switches (e.g. is_training): off
        if node.op == "Placeholder" and node.attr["dtype"].type == 10:
            feed[node.name + ":0"] = False
    results = session.run(fetches, feed)
    if "scores" in results:
        results["scores"] = results["scores"].reshape(len(ids), -1)
    return results


def _main(argv):
    from absl import flags

    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix; PREFIX.meta must exist.")
    flags.DEFINE_string("input", None, "npz of item_ids_<i> arrays [B, T] (int32).")
    flags.DEFINE_string("output", None, "npz to write the oracle's outputs to.")
    flags.DEFINE_bool("with_targets", True, "Fine-tuned graphs: also score every target.")
    flags.mark_flags_as_required(["checkpoint", "input", "output"])
    flag_values = flags.FLAGS
    flag_values(argv)

    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    with np.load(flag_values.input) as data:
        batches = [data[f"item_ids_{i}"] for i in range(len(data.files))]
    graph = tf.Graph()
    with graph.as_default():
        saver = v1.train.import_meta_graph(flag_values.checkpoint + ".meta", clear_devices=True)
        graph_def = graph.as_graph_def()
        names = {node.name for node in graph_def.node}
        with v1.Session(graph=graph) as session:
            saver.restore(session, flag_values.checkpoint)
            last = _last_block_scope(graph_def)
            results = {}
            for index, ids in enumerate(batches):
                outputs = _run_graph(session, graph, graph_def, names, last, ids,
                                     flag_values.with_targets)
                results.update({f"{index}/{key}": value for key, value in outputs.items()})
    np.savez(flag_values.output, **results)


if __name__ == "__main__":
    _main(sys.argv)
