"""The on-device (LiteRT) export, float32 and dynamic-range int8, against the SavedModel:
same ids (float32), recall@k of int8 against float32, sizes.

    python benchmarks/litert_recall.py [--histories=500] [--output=RESULTS_DIR]

Models: the release's pre-trained NextItNet (`../shared/tf1_checkpoints/nextitnet_causal`,
converted; trained weights, so int8 rounding meets a real score distribution) with the
histories of its own pre-training CSV (the most recent items of each user, the last one
left out). Each history is answered by the SavedModel (`serving_default`), the float32
and the int8 LiteRT models (`tf.lite.Interpreter`); recorded per history: the three
top-k id lists. No timing (latency on this shared machine would measure the load).
"""

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from conftest import PRETRAIN_CSV, PRETRAINED_PREFIX
    from raw_output import Run
    from peterrec_tf.convert_tf1 import convert_checkpoint
    from peterrec_tf.model_dir import load_model_dir
    from peterrec_tf.serving.litert import run_litert, write_litert
    from peterrec_tf.serving.saved_model import export

    if not os.path.exists(PRETRAINED_PREFIX + ".index"):
        print(f"error: {PRETRAINED_PREFIX}: the release checkpoint is not there", file=sys.stderr)
        return 2
    run = Run("litert_recall")
    with tempfile.TemporaryDirectory(prefix="litert-recall-") as root:
        model_dir = os.path.join(root, "pre")
        convert_checkpoint(PRETRAINED_PREFIX, model_dir, vocab_csv=PRETRAIN_CSV, log=lambda _: None)
        model, config, vocabs = load_model_dir(model_dir)
        items = vocabs["items"]
        index = {token: i for i, token in enumerate(items)}
        length = model.framing.length
        histories = []
        with open(PRETRAIN_CSV, encoding="utf-8") as handle:
            for line in handle:
                ids = [index[t] for t in line.strip().split(",") if t in index and index[t] > 0]
                if len(ids) > 1:
                    histories.append(ids[:-1][-length:])
                if len(histories) == args.histories:
                    break
        served = tf.saved_model.load(export([("next", model_dir)], os.path.join(root, "sm"), "m",
                                            k=args.k, log=lambda *_: None)["path"])
        signature = served.signatures["serving_default"]
        paths, sizes = {}, {}
        for quantize in ("none", "dynamic_int8"):
            paths[quantize] = os.path.join(root, f"next_{quantize}.tflite")
            sizes[quantize] = write_litert(model_dir, paths[quantize], k=args.k,
                                           quantize=quantize, log=print)["bytes"]
        rows = []
        for ids in histories:
            tokens = np.array([[items[i] for i in ids]], dtype=object).astype(bytes)
            padded = np.array([[0] * (length - len(ids)) + ids], np.int32)
            rows.append({
                "saved_model": signature(items=tf.constant(tokens))["top_k_ids"].numpy()[0].tolist(),
                **{q: run_litert(p, padded)[0][0].tolist() for q, p in paths.items()}})
    same_float = sum(r["none"] == r["saved_model"] for r in rows)
    recall = float(np.mean([len(set(r["dynamic_int8"]) & set(r["none"])) / args.k for r in rows]))
    same_int8 = sum(r["dynamic_int8"] == r["none"] for r in rows)
    summary = {"model": "release nextitnet_causal (converted)", "items": len(items),
               "history_length": length, "k": args.k, "histories": len(rows),
               "float32_same_ids_as_saved_model": same_float,
               f"int8_recall_at_{args.k}_vs_float32": recall,
               "int8_same_ids_and_order_as_float32": same_int8, "bytes": sizes}
    output = run.write(summary, rows, **({"results_dir": args.output} if args.output else {}))
    print(f"float32 LiteRT = SavedModel ids on {same_float}/{len(rows)} histories; int8 "
          f"recall@{args.k} vs float32 {recall:.4f} (same list on {same_int8}); sizes {sizes}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
