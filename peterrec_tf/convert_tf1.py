"""Convert a checkpoint of the original TF1 PeterRec / NextItNet release to Keras.

    python -m peterrec_tf.convert_tf1 --checkpoint=PREFIX --output_dir=DIR \
        [--causal=true|false] [--insertion=b|d] [--pooling=last|first_last|mean] \
        [--vocab_csv=CSV] [--target_vocab_csv=CSV] [--max_len=N] [--overwrite]

Everything is inferred from the checkpoint's names and shapes (vocabulary, channels,
kernel size, dilation list, head, patches, target embeddings); whether the backbone is
causal, the patch insertion (b serial, d parallel) and the fine-tuned user vector's
pooling are read from `PREFIX.meta` when present, else from the flags. Strict: every
variable must be placed, every weight filled, every shape fit and every value be
finite, or the conversion fails naming all offenders; exit status 2 with
`error: <file>: ...` for any unreadable or unfit input. The model records the framing
of its release script family (see BUILD_NOTES.md). The work is in `peterrec_tf.conversion`.
"""

import json

from peterrec_tf.conversion import (POOLINGS, RELEASE_INSERTIONS, ConversionError,
                                    convert_checkpoint, release_token_order)

__all__ = ["ConversionError", "convert_checkpoint", "release_token_order"]


def _parse_bool(text):
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConversionError(f"--causal must be true or false, got {text!r}")


def define_flags():
    from absl import flags

    flags.DEFINE_string("checkpoint", None,
                        "Prefix of the TF1 checkpoint (the path without .index/.data-*); "
                        "PREFIX.meta is used when present to infer --causal, --insertion "
                        "and --pooling.")
    flags.DEFINE_string("output_dir", None, "Model directory to write (model.keras, "
                        "config.json, vocabularies). Must be absent or empty unless --overwrite.")
    flags.DEFINE_bool("overwrite", False, "Replace a non-empty --output_dir (atomically: the "
                      "new directory is written beside it and swapped in). A model there "
                      "with another backbone is kept in versions/<fingerprint>/, where tasks "
                      "fine-tuned over it still find it.")
    flags.DEFINE_string("causal", None,
                        "true (NextItNet) or false (GRec encoder). Required when PREFIX.meta is "
                        "absent; must agree with the .meta graph when both are present.")
    flags.DEFINE_enum("insertion", None, list(RELEASE_INSERTIONS),
                      "Patch insertion of a fine-tuned checkpoint: b (serial) or d (parallel). "
                      "Required for checkpoints with patches when PREFIX.meta is absent.")
    flags.DEFINE_enum("pooling", None, list(POOLINGS),
                      "User vector of a fine-tuned checkpoint: last (causal scripts), "
                      "first_last (non-causal PeterRec), mean (GRec_TF_FineAll). Required for a "
                      "FineAll checkpoint (no patches) when PREFIX.meta is absent.")
    flags.DEFINE_string("vocab_csv", None,
                        "The release's pre-training CSV: rebuilds its item id order (first "
                        "appearance, 0 = <UNK>) into DIR/vocab.txt for a pre-trained checkpoint. "
                        "A fine-tuned checkpoint takes its item ids from --target_vocab_csv "
                        "instead (the release's fine-tuning scripts re-fit their vocabulary on "
                        "that file's sources); given with it, the two orders must agree.")
    flags.DEFINE_string("target_vocab_csv", None,
                        "The release's fine-tuning CSV: rebuilds its target id order (targets "
                        "after ',,', 0 reserved) into DIR/target_vocab.txt and the item id order "
                        "its fine-tuning script reads (first appearance over the sources before "
                        "',,') into DIR/vocab.txt; its longest source history is the fine-tuned "
                        "model's framing width.")
    flags.DEFINE_integer("max_len", 0,
                         "History length of the converted model's framing (config.json's "
                         "max_len). 0 = for a fine-tuned checkpoint the longest source history "
                         "of --target_vocab_csv (one of the two is required: the release "
                         "right-pads to that width); for a pre-trained one the longest row of "
                         "--vocab_csv (minus one if causal: its graph drops the last item).")
    flags.mark_flags_as_required(["checkpoint", "output_dir"])


def main(values):
    """flags -> convert_checkpoint -> its framing and backbone (JSON) and the last line."""
    from pipelines.command import Done, command_line

    config = convert_checkpoint(values.checkpoint, values.output_dir,
                                _parse_bool(values.causal), values.insertion,
                                values.vocab_csv, values.target_vocab_csv,
                                max_len=values.max_len, pooling=values.pooling,
                                overwrite=values.overwrite)
    print(json.dumps({k: config[k] for k in ("kind", "framing", "backbone") if k in config},
                     indent=2))
    return Done(f"wrote {values.output_dir}",
                command_line("peterrec_tf.export", model_dir=values.output_dir)
                if config.get("kind") != "pretrain" else
                command_line("peterrec_tf.finetune", pretrained=values.output_dir,
                             data_dir="PREPARED_TASK_DIR", model_dir="runs/TASK"))


#: A conversion does not resume: it writes into a staging directory published only when
#: complete, so an interrupted one left nothing and starts over.
INTERRUPTED = ("the same command again (a conversion starts over; nothing was written to "
               "--output_dir)")


def cli():
    """The command (`python -m peterrec_tf.convert_tf1` and its console command)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__, on_interrupt=INTERRUPTED)


if __name__ == "__main__":
    cli()
