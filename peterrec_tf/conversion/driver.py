"""The conversion driver: read, plan from the name tables, settle what the graph or the
flags say, build, fill every weight, write atomically."""

import dataclasses
import os

import numpy as np

from peterrec_tf.conversion import graph as graphs
from peterrec_tf.conversion import names
from peterrec_tf.conversion.errors import ConversionError, error_text
from peterrec_tf.conversion.output import (check_output_dir, keep_replaced_versions,
                                           remove_stale_staging, staged_output)
from peterrec_tf.conversion.reader import (check_checkpoint_covers, check_meta_covers,
                                           find_non_finite, read_checkpoint, read_meta_graph)
from peterrec_tf.conversion.release_csv import (pretrain_row_length, release_source_order,
                                                release_token_order, source_history_length)

#: The release's serial insertion is (b), its parallel one (d).
RELEASE_INSERTIONS = ("b", "d")
POOLINGS = ("last", "first_last", "mean")


@dataclasses.dataclass
class Plan:
    """What the checkpoint's names and shapes say about the model."""
    matches: dict            # TF1 name -> (rule, fields)
    vocab_size: int
    channels: int
    dilations: list
    kernel_size: int
    head: str = None          # pre-trained: names.FULL_HEAD or names.DOT_HEAD
    patches: list = ()
    patch_config: dict = None
    num_targets: int = None
    unused: list = ()         # a fine-tuned checkpoint's leftover pre-training head

    @property
    def finetuned(self):
        return self.num_targets is not None or bool(self.patches)

    def role_names(self, *roles):
        return sorted(n for n, (rule, _) in self.matches.items() if rule.role in roles)


@dataclasses.dataclass
class Settings:
    """What the .meta graph (or, without it, the flags) says."""
    causal: bool
    insertion: str = None
    pooling: str = None


def plan_model(prefix, variables):
    """A Plan and the non-fatal errors (unknown names) to report with the weights' own."""
    matches, errors = {}, []
    for name in variables:
        rule, fields = names.match_name(name)
        if rule is None:
            errors.append(f"unexpected variable {name}")
        else:
            matches[name] = (rule, fields)
    fatal = []
    embedding = variables.get("allitem_embeddings")
    if embedding is None or embedding.ndim != 2:
        fatal.append("missing variable allitem_embeddings [V, C]")
    blocks = {}
    for rule, fields in matches.values():
        if "i" in fields:
            blocks.setdefault(int(fields["i"]), set()).add(int(fields["d"]))
    if not blocks:
        fatal.append("no residual block (nextitnet_residual_blockdecoder_layer_*) found")
    fatal += [f"block {i} has two dilations: {sorted(d)}" for i, d in sorted(blocks.items())
              if len(d) > 1]
    if sorted(blocks) != list(range(len(blocks))):
        fatal.append(f"block indices are not 0..{len(blocks) - 1}: {sorted(blocks)}")
    if fatal:
        raise ConversionError(error_text(prefix, errors + fatal))
    dilations = [next(iter(blocks[i])) for i in sorted(blocks)]
    conv = variables.get(names.BLOCK_RULES[0].tf1_name({"i": 0, "d": dilations[0]}))
    plan = Plan(matches, int(embedding.shape[0]), int(embedding.shape[1]), dilations=dilations,
                kernel_size=int(conv.shape[1]) if conv is not None and conv.ndim == 4 else 3)

    patch_fields = [fields for rule, fields in matches.values() if rule.role == names.PATCH]
    plan.patches = sorted({fields["p"] for fields in patch_fields})
    if plan.patches:
        if plan.patches != ["mp_1", "mp_2"]:
            errors.append(f"patch scopes {plan.patches}: the release's insertions use mp_1 "
                          "and mp_2")
        down = variables.get(f"{names.BLOCK}/mp_1/mp_conv1_down_0/weight".format(
            i=0, d=dilations[0]))
        plan.patch_config = {
            "bottleneck_dim": (int(down.shape[-1]) if down is not None
                               else max(1, plan.channels // 4)),
            "cardinality": len({fields["j"] for fields in patch_fields}),
            "activation": "gelu_tanh", "shortcut": True}
    targets = variables.get("target-item/allitem_embeddings_target")
    if targets is not None:
        plan.num_targets = int(targets.shape[0])
    heads = {role: plan.role_names(role) for role in names.PRETRAINING_HEADS}
    present = [n for role in names.PRETRAINING_HEADS for n in heads[role]]
    if plan.finetuned:
        plan.unused = present
        if plan.num_targets is None:
            errors.append("missing variable target-item/allitem_embeddings_target")
    else:
        complete = [role for role in names.PRETRAINING_HEADS
                    if len(heads[role]) == len(names.HEAD_RULES[role])]
        if not present:
            errors.append("no pre-training head: expected logits/weight+logits/bias or "
                          "softmax_w+softmax_b, found neither")
        elif len(complete) != 1 or len(present) != len(names.HEAD_RULES[complete[0]]):
            errors.append(f"two heads or a partial one: {present}")
        else:
            plan.head = complete[0]
    return plan, errors


def settle(prefix, plan, graph, causal, insertion, pooling):
    """Causal, insertion and pooling: from the graph when there is one (a flag that
    contradicts it is an error), else from the flags."""
    meta = prefix + ".meta"

    def agree(flag, value, found):
        if value is not None and value != found:
            raise ConversionError(f"--{flag}={value} contradicts {meta} ({flag}={found})")
        return found

    scope = names.BLOCK.format(i=0, d=plan.dilations[0])
    if graph is not None:
        causal = agree("causal", causal, graphs.infer_causal(graph, scope))
    elif causal is None:
        raise ConversionError(f"{meta} not found: pass --causal=true|false")
    if plan.patches:
        if graph is not None:
            insertion = agree("insertion", insertion, graphs.infer_insertion(graph, scope))
        elif insertion is None:
            raise ConversionError(f"{meta} not found and the checkpoint has patches: pass "
                                  "--insertion=b (serial) or --insertion=d (parallel)")
        if insertion not in RELEASE_INSERTIONS:
            raise ConversionError(f"the release implements insertions b and d, got {insertion!r}")
    elif insertion is not None:
        raise ConversionError(f"--insertion={insertion} given but {prefix} has no patches")
    if pooling is not None and pooling not in POOLINGS:
        raise ConversionError(f"--pooling must be one of {POOLINGS}, got {pooling!r}")
    if not plan.finetuned:
        if pooling is not None:
            raise ConversionError(f"--pooling={pooling} given but {prefix} is a pre-trained "
                                  "checkpoint (no target embeddings)")
    elif graph is not None:
        pooling = agree("pooling", pooling, graphs.infer_pooling(graph))
    elif pooling is None:
        if not plan.patches:
            raise ConversionError(
                f"{meta} not found and {prefix} is a FineAll checkpoint (no patches): pass "
                "--pooling=last (NextitNet_TF_FineAll) or --pooling=mean (GRec_TF_FineAll)")
        pooling = "last" if causal else "first_last"  # the PeterRec scripts' user vector
    return Settings(causal, insertion if plan.patches else None, pooling)


def choose_framing(prefix, plan, settings, max_len, vocab_csv, target_vocab_csv):
    """(Framing, where its length came from): the release family's input framing."""
    from peterrec_tf.data.framing import Framing

    if max_len is not None and max_len < 0:
        raise ConversionError(f"--max_len must be positive, got {max_len}")
    given = (max_len, "--max_len") if max_len else (None, None)
    if not plan.finetuned:
        length, source = given
        if length is None and vocab_csv:
            # a causal pre-training graph drops the last item of each row itself
            length = pretrain_row_length(vocab_csv) - (1 if settings.causal else 0)
            source = vocab_csv
        return Framing("history", length or None), source
    length, source = given
    if length is None and target_vocab_csv:
        length, source = source_history_length(target_vocab_csv), target_vocab_csv
    if not length:
        raise ConversionError(
            f"{prefix}: a fine-tuned checkpoint needs the history width the release's script "
            "padded its inputs to (its framing is right-padded to a fixed width): pass "
            "--max_len=WIDTH or --target_vocab_csv=FINETUNE_CSV (its longest source history)")
    if not plan.patches:
        kind = "release_plain"      # NextitNet_TF_FineAll / GRec_TF_FineAll
    else:
        kind = "release_causal" if settings.causal else "tcl"
    return Framing(kind, length), source


def read_vocabularies(plan, vocab_csv, target_vocab_csv):
    """{"items", "targets"}: a pre-trained checkpoint's items in the pre-training CSV's
    order; a fine-tuned one's items in its fine-tuning CSV's source order (the release's
    fine-tuning scripts re-fit their vocabulary on that file, so that is the order the
    fine-tuned graph reads), its targets in that CSV's target order."""
    vocabs = {}
    if plan.finetuned and vocab_csv and not target_vocab_csv:
        raise ConversionError(
            f"--vocab_csv={vocab_csv} alone cannot name a fine-tuned checkpoint's item ids: "
            "the release's fine-tuning script fits its vocabulary on the fine-tuning CSV's "
            "source histories, so pass --target_vocab_csv=FINETUNE_CSV (it gives both the "
            "item and the target ids)")
    if plan.finetuned and target_vocab_csv:
        vocabs["items"] = release_source_order(target_vocab_csv)
        if len(vocabs["items"]) != plan.vocab_size:
            raise ConversionError(
                f"{target_vocab_csv}: its source histories give {len(vocabs['items'])} item "
                f"ids but the checkpoint has {plan.vocab_size} item embeddings (the release's "
                "fine-tuning script builds its item ids from this file's sources)")
        if vocab_csv:
            pretraining = release_token_order(vocab_csv)
            if pretraining != vocabs["items"]:
                moved = sum(a != b for a, b in zip(pretraining, vocabs["items"]))
                raise ConversionError(
                    f"{vocab_csv} orders the items differently from the sources of "
                    f"{target_vocab_csv} ({moved} of {len(pretraining)} ids differ); the "
                    "release's fine-tuning script fits its vocabulary on the fine-tuning CSV, "
                    "so the fine-tuned checkpoint reads ids in that order: leave out "
                    "--vocab_csv")
    elif vocab_csv:
        vocabs["items"] = release_token_order(vocab_csv)
        if len(vocabs["items"]) != plan.vocab_size:
            raise ConversionError(f"{vocab_csv}: gives {len(vocabs['items'])} ids but the "
                                  f"checkpoint has {plan.vocab_size} item embeddings")
    if target_vocab_csv:
        if plan.num_targets is None:
            raise ConversionError("--target_vocab_csv given but the checkpoint has no target "
                                  "embeddings")
        vocabs["targets"] = release_token_order(target_vocab_csv, targets=True)
        if len(vocabs["targets"]) != plan.num_targets:
            raise ConversionError(
                f"{target_vocab_csv}: gives {len(vocabs['targets'])} target ids but the "
                f"checkpoint has {plan.num_targets} target embeddings")
    return vocabs


def build_model(plan, settings, framing):
    import keras

    from peterrec_tf.models import Backbone, FineTuner, pretrainer_for

    keras.utils.set_random_seed(0)
    try:
        backbone = Backbone(plan.vocab_size, plan.channels, plan.dilations, plan.kernel_size,
                            settings.causal, insertion=settings.insertion,
                            patch_config=plan.patch_config,
                            padding="learned")  # the release trains and reads id 0 as an item
        if plan.finetuned:
            model = FineTuner(backbone, task="item_rec", num_outputs=plan.num_targets,
                              pooling=settings.pooling, framing=framing,
                              method="peterrec" if plan.patches else "fineall")
        else:
            model = pretrainer_for(backbone, head="full" if plan.head == names.FULL_HEAD
                                   else "dot", framing=framing)
        model.build()
    except ValueError as error:
        raise ConversionError(
            f"cannot build the model the checkpoint describes: {error}") from error
    return model


def _relative(model, path):
    head, _, rest = path.partition("/")
    return rest if head == model.name else path


def fill_weights(prefix, model, plan, variables, errors):
    """Assign every placed variable to its Keras weight; name every offender (unknown,
    missing, misshapen, non-finite) in one error before anything is assigned."""
    weights = {_relative(model, w.path): w for w in model.weights}
    pairs, filled = [], set()
    for name, (rule, fields) in sorted(plan.matches.items()):
        if name in plan.unused:
            continue
        path = rule.keras_path(fields)
        weight = weights.get(path)
        if weight is None:
            errors.append(f"unexpected variable {name} (the model has no {path})")
            continue
        filled.add(path)
        value, expected = variables[name], rule.tf1_shape(weight.shape)
        if tuple(value.shape) != expected:
            errors.append(f"{name}: shape {tuple(value.shape)}, expected {expected}")
            continue
        pairs.append((weight, rule.transform(value, weight.shape)))
    allowed = [r for r in names.RULES if r.role not in names.PRETRAINING_HEADS
               or r.role == plan.head]
    for path in sorted(set(weights) - filled):
        found = [r.tf1_name(f) for r in allowed for f in [r.match_keras(path)] if f is not None]
        errors.append(f"missing variable {found[0] if found else path}")
    errors += find_non_finite(variables)
    if errors:
        raise ConversionError(error_text(prefix, errors))
    for weight, value in pairs:
        weight.assign(value)
    return len(pairs)


def convert_checkpoint(prefix, output_dir, causal=None, insertion=None, vocab_csv=None,
                       target_vocab_csv=None, log=print, max_len=None, pooling=None,
                       overwrite=False):
    """Convert checkpoint `prefix` into model directory `output_dir`; returns its config.

    The model records its release family's framing (`peterrec_tf.data.framing`): `history` for
    a pre-trained model (length `max_len`, else the pre-training CSV's longest row, minus
    the item a causal graph drops); for a fine-tuned one `release_causal` (causal PeterRec
    scripts), `tcl` (non-causal PeterRec) or `release_plain` (the FineAll scripts), at
    width `max_len`, else the longest source history of `target_vocab_csv`.
    """
    from pipelines.locking import exclusive_lock

    target = os.path.abspath(output_dir)
    with exclusive_lock(os.path.dirname(target), f".{os.path.basename(target)}.lock",
                        owner=output_dir):  # one conversion into a directory at a time
        return _convert(prefix, output_dir, causal, insertion, vocab_csv, target_vocab_csv, log,
                        max_len, pooling, overwrite)


def _convert(prefix, output_dir, causal, insertion, vocab_csv, target_vocab_csv, log, max_len,
             pooling, overwrite):
    check_output_dir(output_dir, overwrite)
    remove_stale_staging(output_dir, log)
    variables, state = read_checkpoint(prefix)
    plan, errors = plan_model(prefix, variables)
    graph_def = read_meta_graph(prefix)
    graph = None
    if graph_def is not None:
        check_meta_covers(graph_def, prefix + ".meta", sorted(variables))
        check_checkpoint_covers(graph_def, prefix + ".meta", prefix, variables, plan.finetuned)
        graph = graphs.Graph(graph_def, prefix + ".meta")
    settings = settle(prefix, plan, graph, causal, insertion, pooling)
    framing, length_from = choose_framing(prefix, plan, settings, max_len, vocab_csv,
                                          target_vocab_csv)
    vocabs = read_vocabularies(plan, vocab_csv, target_vocab_csv)
    model = build_model(plan, settings, framing)
    placed = fill_weights(prefix, model, plan, variables, errors)
    config = {
        "source": "tf1_checkpoint",
        "max_len": framing.length,
        "max_len_from": length_from,
        "framing": framing.get_config(),
        "checkpoint": os.path.abspath(prefix),
        "converted_variables": placed,
        "unused_variables": list(plan.unused),
        "skipped_training_state": len(state),
        "inferred_from_meta": graph is not None,
    }
    if any("0" in tokens for tokens in vocabs.values()):
        # the release CSVs left-pad short histories with the literal token 0, which the
        # release trains as an item: kept as one for parity, never served as an answer
        config["padding_tokens"] = ["0"]
    from peterrec_tf.task_artifact import PRETRAINED_FINGERPRINT, backbone_fingerprint

    # what tasks tuned over it are checked against, without loading the model again
    config[PRETRAINED_FINGERPRINT] = backbone_fingerprint(model.backbone)
    from peterrec_tf.model_dir import save_model_dir

    def keep_versions(staging):
        keep_replaced_versions(output_dir, model.backbone, staging, log)

    with staged_output(output_dir, overwrite, before_swap=keep_versions) as staging:
        if plan.unused:
            np.savez(os.path.join(staging, "unused_variables.npz"),
                     **{n.replace("/", "__"): variables[n] for n in plan.unused})
            config["unused_variables_file"] = "unused_variables.npz"
        config = save_model_dir(staging, model, config, vocabs)
    log(f"converted {placed} variables from {prefix} ({len(state)} optimizer/counter "
        "variables skipped)" + (f"; not used by the fine-tuning model: {', '.join(plan.unused)}"
                                if plan.unused else ""))
    return config
