"""Test-only stand-in for tensorflow_model_server: runs exports the way Serving does.

Each export is loaded with the TF1 session loader (`tf.compat.v1.saved_model.loader.load`)
and every signature is run by the tensor names in its SignatureDef. A gRPC
PredictionService on a real localhost socket serves them, so clients are exercised end
to end. (The real server binary is not installable from the registries this project
reaches.)
"""

import time
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc


class SessionModel:
    """One export loaded into a TF1 Session; `run(signature, inputs)` like Serving."""

    def __init__(self, export_dir):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], export_dir)
        self.signatures = dict(meta.signature_def)

    def run(self, signature_name, inputs):
        """Outputs of one signature, with Serving's input rules: every signature input must
        be in the request unless the SignatureDef has a default for it; no extra inputs."""
        if signature_name not in self.signatures:
            raise KeyError(f"Serving signature key \"{signature_name}\" not found; have "
                           f"{sorted(self.signatures)}")
        signature = self.signatures[signature_name]
        extra = set(inputs) - set(signature.inputs)
        missing = set(signature.inputs) - set(inputs) - set(signature.defaults)
        if missing or extra:
            raise ValueError(f"input size does not match signature {signature_name}: takes "
                             f"{sorted(signature.inputs)} (defaults for {sorted(signature.defaults)}); "
                             f"sent extra {sorted(extra)}, missing but required {sorted(missing)}")
        feeds = {signature.inputs[name].name: value for name, value in inputs.items()}
        for name, default in signature.defaults.items():
            if name not in inputs:
                feeds[signature.inputs[name].name] = tf.make_ndarray(default)
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return self.session.run(fetches, feeds)

    def run_in_cxx(self, signature_name, inputs):
        """One signature run through the C++ session alone, as tensorflow_model_server
        feeds it: no Python-side check of the fed shapes against the placeholders'
        (`Session.run` has one; Serving does not)."""
        from tensorflow.core.protobuf import config_pb2

        signature = self.signatures[signature_name]
        names = sorted(inputs)
        outputs = sorted(signature.outputs)
        options = config_pb2.CallableOptions(
            feed=[signature.inputs[name].name for name in names],
            fetch=[signature.outputs[name].name for name in outputs])
        call = self.session._make_callable_from_options(options)
        return dict(zip(outputs, call(*[np.asarray(inputs[name]) for name in names])))


def run_batched_like_serving(model, signature_name, requests):
    """Run several requests as one batch the way tensorflow_model_server's batching does
    with `pad_variable_length_inputs: true`: every input needs a batch dimension of the
    same size within a request; tensors are padded at the end of every other dimension
    with their own first element, concatenated along the batch and the outputs split back."""
    sizes = []
    for inputs in requests:
        shapes = {name: np.shape(value) for name, value in inputs.items()}
        if any(len(shape) == 0 for shape in shapes.values()):
            raise ValueError(f"Batching session Run() input tensors must have at least one dimension: {shapes}")
        if len({shape[0] for shape in shapes.values()}) != 1:
            raise ValueError(f"Batching session Run() input tensors must have equal 0th-dimension size: {shapes}")
        sizes.append(next(iter(shapes.values()))[0])
    merged = {}
    for name in requests[0]:
        values = [np.asarray(inputs[name]) for inputs in requests]
        target = np.max([v.shape for v in values], axis=0)
        padded = []
        for value in values:
            widths = [(0, 0)] + [(0, int(t - n)) for t, n in zip(target[1:], value.shape[1:])]
            fill = value.flat[0]
            padded.append(np.pad(value, widths, constant_values=fill) if value.dtype != object
                          else np.pad(value.astype(bytes), widths, constant_values=fill))
        merged[name] = np.concatenate(padded, axis=0)
    outputs = model.run(signature_name, merged)
    bounds = np.cumsum([0] + sizes)
    return [{name: value[start:end] for name, value in outputs.items()}
            for start, end in zip(bounds[:-1], bounds[1:])]


def replay_warmup(model, path):
    """Run every PredictionLog of a warm-up file; returns how many ran."""
    count = 0
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        model.run(request.model_spec.signature_name or "serving_default", inputs)
        count += 1
    return count


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models, delays=None):
        self.models = models  # name -> {version: SessionModel}
        self.delays = delays or {}

    def Predict(self, request, context):
        name = request.model_spec.name
        if name not in self.models:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        versions = self.models[name]
        version = request.model_spec.version.value if request.model_spec.HasField("version") \
            else max(versions)
        if version not in versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {name} version {version}")
        time.sleep(self.delays.get(name, 0.0))
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = versions[version].run(request.model_spec.signature_name or "serving_default",
                                            inputs)
        except KeyError as error:  # what Serving answers for an unknown signature
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error.args[0]))
        except (ValueError, tf.errors.OpError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0][:500])
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        return response


def start_server(models, port=0, delays=None):
    """(server, port) on 127.0.0.1; stop with server.stop(0)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(models, delays), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


def start_rest_server(models):
    """A minimal TF Serving REST endpoint (`/v1/models/<name>[/versions/<v>]:predict`) on
    127.0.0.1, `instances` (row) and `inputs` (columnar) forms; returns (server, port)."""
    import json
    import re
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, code, payload):
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            match = pattern.match(self.path)
            if not match or match.group(1) not in models:
                return self.answer(404, {"error": f"Servable not found for request: {self.path}"})
            versions = models[match.group(1)]
            version = int(match.group(2)) if match.group(2) else max(versions)
            if version not in versions:
                return self.answer(404, {"error": f"Servable not found: version {version}"})
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = request.get("signature_name", "serving_default")
            try:
                if "instances" in request:
                    rows = request["instances"]
                    inputs = {k: np.array([row[k] for row in rows]) for k in rows[0]}
                else:
                    inputs = {k: np.array(v) for k, v in request["inputs"].items()}
                inputs = {k: v.astype(bytes) if v.dtype.kind == "U" else
                          v.astype(np.int32) if k == "k" else v.astype(np.int64) if v.dtype.kind == "i" else v
                          for k, v in inputs.items()}
                outputs = versions[version].run(signature, inputs)
            except KeyError as error:
                return self.answer(400, {"error": str(error.args[0])})
            except (ValueError, tf.errors.OpError) as error:
                return self.answer(400, {"error": str(error).splitlines()[0][:500]})
            plain = {k: (np.char.decode(v.astype(bytes)) if v.dtype.kind in "SO" else v).tolist()
                     for k, v in outputs.items()}
            single = next(iter(plain.values())) if len(plain) == 1 else None  # Serving drops the name
            if "instances" in request:
                count = len(request["instances"])
                rows = single if single is not None else [{k: v[i] for k, v in plain.items()}
                                                           for i in range(count)]
                return self.answer(200, {"predictions": rows})
            return self.answer(200, {"outputs": single if single is not None else plain})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    import threading
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
