"""Warm-up records of an export: `assets.extra/tf_serving_warmup_requests`, PredictRequests
TensorFlow Serving replays when it loads a version, so the first user request does not pay
for tracing and loading every signature."""

import numpy as np
import tensorflow as tf

WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_requests(model_name, module, signatures):
    """PredictRequests for warm-up: per signature three, with batch sizes 2, 1 and 2 and
    history lengths 6, 3 and 6, made of real item tokens (and k = 2, 3, 4 where taken)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2

    known = module.item_tokens[1:6] or [""]
    histories = [np.array([[""] + known, [""] * len(known) + known[:1]], dtype=bytes),
                 np.array([[""] + known[-2:]], dtype=bytes)]
    histories.append(histories[0])
    requests = []
    for name, function in sorted(signatures.items()):
        for example, history in enumerate(histories):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for spec in function.input_signature:
                if spec.name == "items":
                    value = history
                elif spec.name == "item_ids":
                    value = np.array([[module.item_tokens.index(t.decode()) if t else 0 for t in row]
                                      for row in history], dtype=np.int64)
                elif spec.name == "exclude":  # a leading "" column, as the client sends
                    value = np.array([["", known[0]]] * len(history), dtype=bytes)
                else:  # k, one per history
                    value = np.full(len(history), 2 + example, dtype=np.int32)
                request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value))
            requests.append(request)
    return requests


def write_warmup(path, requests):
    """`assets.extra/tf_serving_warmup_requests`: PredictionLog records Serving replays at load."""
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
