"""Renderers of BUILD_NOTES' scale and speed tables (task bytes, paper-scale chain, prepare
memory and time, Beam throughput, training and input-pipeline throughput), each from the
newest kept raw output; `benchmarks.tables` registers them beside the others."""

from benchmarks import raw_output


def _cell(text):
    return str(text).replace("|", "\\|")


def source(payload):
    prov = payload["provenance"]
    dirty = " (dirty tree)" if prov.get("dirty") else ""
    load = prov.get("load") or {}
    return (f"Source: `{payload['path']}` (commit {str(prov.get('commit'))[:7]}{dirty}; "
            f"`{prov.get('command')}`; load average before/after "
            f"{load.get('loadavg_before')} / {load.get('loadavg_after')}).")


def render_task_artifact_bytes():
    found = raw_output.newest("task_artifact_bytes")
    if found is None:
        return None
    s, raw = found["summary"], found["raw"]
    lines = [f"{s['items']:,} items, {s['channels']} channels, {s['targets']:,} item-rec "
             f"targets: pre-trained model directory {s['pretrained_dir_bytes']:,} bytes, a "
             f"whole fine-tuned model directory {s['whole_model_dir_bytes']:,} bytes.", "",
             "| task | patch | trained parameters | task directory bytes | share of a whole "
             "fine-tuned model |", "|---|---|---|---|---|"]
    for t in raw["tasks"]:
        lines.append(f"| {t['task']} | {t['patch']} | {t['trained_parameters']:,} | "
                     f"{t['task_dir_bytes']:,} | {t['share_of_whole']:.2%} |")
    lines += ["", "A task loaded back over the backbone scores within "
              f"{raw['task_loaded_back_max_abs_difference']:.1e} of the model saved.",
              source(found)]
    return lines
