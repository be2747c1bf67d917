"""`EXPORT_BASE/models.config`: the `ModelServerConfig` tensorflow_model_server reads with
--model_config_file, read (refused when it is not one) and merged, never overwritten, under
a lock, after each export."""

import os

from peterrec_tf.serving.export_options import ExportError


def read_models_config(path):
    """The `ModelServerConfig` in `path` (empty when there is none); ExportError when it
    is not one, or lists no models (a `custom_model_config`)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as error:
            raise ExportError(f"{path}: not a ModelServerConfig ({error}); fix or remove it: "
                              "it is merged with, never overwritten") from error
        if config.WhichOneof("config") == "custom_model_config":
            raise ExportError(f"{path} holds a custom_model_config: it cannot list models")
    return config


def write_models_config(export_base, num_versions=2, serving_base_path=None, model_name=None):
    """`EXPORT_BASE/models.config` for tensorflow_model_server --model_config_file, as a
    `ModelServerConfig` protobuf (parsed and written with `text_format`), merged with the
    file already there: every entry it holds is kept as it is (another model's
    `base_path`, a hand-edited version policy or labels), except `model_name`'s (the model
    just exported), whose `latest { num_versions }` policy is set and whose `base_path` is
    set when `serving_base_path` is given; a model under the base without an entry gets
    one. `serving_base_path` is where the server sees EXPORT_BASE (e.g. /models inside the
    tensorflow/serving container); default for new entries: its absolute path here. A
    blocking lock beside it serialises concurrent exports into one base."""
    import fcntl

    from google.protobuf import text_format

    path = os.path.join(export_base, "models.config")
    root = serving_base_path.rstrip("/") if serving_base_path else os.path.abspath(export_base)
    lock = os.open(os.path.join(export_base, ".models.config.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = read_models_config(path)
        entries = {entry.name: entry for entry in config.model_config_list.config}
        for name in sorted(os.listdir(export_base)):
            local = os.path.join(export_base, name)
            if not (os.path.isdir(local) and any(d.isdigit() for d in os.listdir(local))):
                continue
            entry = entries.get(name)
            if entry is None:
                entry = entries[name] = config.model_config_list.config.add(
                    name=name, base_path=f"{root}/{name}", model_platform="tensorflow")
                entry.model_version_policy.latest.num_versions = int(num_versions)
            elif name == model_name:
                if serving_base_path:
                    entry.base_path = f"{root}/{name}"
                entry.model_version_policy.latest.num_versions = int(num_versions)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text_format.MessageToString(config))
        os.replace(path + ".tmp", path)
    finally:
        os.close(lock)  # releases the lock
    return path
