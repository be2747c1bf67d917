"""Small clients for TensorFlow Serving: gRPC (PredictionService) and REST (:predict).

Both take user histories as lists of item tokens (oldest first), pad them, send them to a
signature of an export (`serving_default`, `<task>`, `<task>_ids`, `<task>_top_k`,
`<task>_user_embedding`, `<task>_top_k_exclude`) and return the outputs as NumPy arrays.
`timeout` is the deadline of a whole call, retries included; UNAVAILABLE (server
starting, restarting or not reachable yet) is retried with backoff while time remains;
any other failure raises ServingError with the status and the server's own message.

Retries are the libraries' own: gRPC by the channel's service config (`retryPolicy` for
UNAVAILABLE, at most 5 attempts, gRPC's cap; the call's deadline covers every attempt),
REST by a `urllib3.util.Retry` (503 and refused connections; its counting and backoff),
each attempt given only the time left of the call's deadline.
"""

import json
import time

import numpy as np

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
#: gRPC ignores a retryPolicy's maxAttempts above 5.
GRPC_MAX_ATTEMPTS = 5


class ServingError(RuntimeError):
    """The server refused or failed a request; `code` is its status (gRPC name or HTTP)."""

    def __init__(self, code, message):
        super().__init__(f"TF Serving answered {code}: {message}")
        self.code = code
        self.details = message


def pad_histories(histories, length=None, pad=""):
    """Token lists -> `[B, 1 + L]` array, left-padded, with at least one leading pad column.

    `length` keeps each history's most recent `length` items and fixes L (send the export's
    max_len to give every request the same shape). The leading pad matters under Serving's
    batching with `pad_variable_length_inputs`: Serving pads shorter requests on the right
    with each tensor's first element, which is then padding, and the graph drops it.
    """
    if isinstance(histories, (str, bytes)) or not len(histories):
        raise ValueError("histories must be a non-empty list of token lists, one per user")
    histories = [list(h)[-length:] if length else list(h) for h in histories]
    width = 1 + (length or max(len(h) for h in histories))
    return np.array([[pad] * (width - len(h)) + [str(t) for t in h] for h in histories], dtype=object)


def _trim(outputs, k):
    """Keep each row's first k ranking columns (a batch may have been computed wider)."""
    return {name: value[:, :k] if name in RANKING_OUTPUTS and k is not None else value
            for name, value in outputs.items()}


RANKING_OUTPUTS = ("top_k_ids", "top_k_items", "scores")


def grpc_service_config(retries):
    """The channel's service config (JSON): Predict retried on UNAVAILABLE with exponential
    backoff 0.1 s .. 2 s, up to `retries` more attempts (gRPC allows 4 at most)."""
    if retries < 1:
        return json.dumps({"methodConfig": [{"name": [{"service": PREDICTION_SERVICE}]}]})
    return json.dumps({"methodConfig": [{
        "name": [{"service": PREDICTION_SERVICE}],
        "retryPolicy": {"maxAttempts": min(int(retries) + 1, GRPC_MAX_ATTEMPTS),
                        "initialBackoff": "0.1s", "maxBackoff": "2s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def rest_retry(retries):
    """`urllib3.util.Retry` for one REST call: refused connections and 503 retried with
    exponential backoff (0.1 s doubling, at most 2 s), nothing else (a POST that reached
    the server and failed is not sent twice)."""
    from urllib3.util import Retry

    return Retry(total=int(retries), connect=int(retries), read=0, status=int(retries),
                 other=0, redirect=0, status_forcelist=(503,), allowed_methods=None,
                 backoff_factor=0.1, backoff_max=2.0, raise_on_status=False)


class _Deadline:
    """Time left of one call's budget, shared by its attempts and backoff sleeps."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


class GrpcClient:
    """`GrpcClient("localhost:8500", "peterrec").predict([["i1", "i2"]], k=5)`."""

    def __init__(self, target, model_name, signature="serving_default", version=None,
                 timeout=5.0, retries=3):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = target
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.enable_retries", 1), ("grpc.service_config", grpc_service_config(retries)),
            # reconnect as soon as the backoff allows while a server starts (gRPC's default
            # first reconnect waits 1 s, longer than a short call's deadline)
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.signature, self.version = model_name, signature, version
        self.timeout, self.retries = timeout, retries

    def request(self, inputs, signature=None):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature or self.signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        for name, value in inputs.items():
            array = np.asarray(value)
            if array.dtype == object or array.dtype.kind == "U":  # tokens as UTF-8 bytes
                array = np.array([t.encode("utf-8") if isinstance(t, str) else bytes(t)
                                  for t in array.ravel()], dtype=object).reshape(array.shape)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        return request

    def predict(self, histories, k=None, signature=None, length=None):
        """Outputs of `signature` for token histories (oldest first). `k` asks for k items
        per history and needs a `<task>_top_k` signature; `length`: see pad_histories."""
        items = pad_histories(histories, length)
        inputs = {"items": items}
        signature = signature or self.signature
        if k is not None:
            if not signature.endswith("_top_k"):
                raise ValueError(f"k needs a <task>_top_k signature, not {signature!r} (which "
                                 "returns the export's --k items)")
            inputs["k"] = np.full(len(items), int(k), dtype=np.int32)
        return _trim(self.call(inputs, signature), k)

    def predict_ids(self, item_ids, signature=None):
        """Outputs of a `<task>_ids` signature for int64 ids `[B, L]` padded with 0 (dropped);
        -1 marks an item outside the vocabulary, kept in its place as id 0, as the token
        signatures keep an unknown token."""
        ids = np.asarray(item_ids, dtype=np.int64)
        ids = np.concatenate([np.zeros((len(ids), 1), np.int64), ids.reshape(len(ids), -1)], axis=1)
        return self.call({"item_ids": ids}, signature)

    def predict_excluding(self, histories, exclude, k, signature, length=None):
        """Outputs of a `<task>_top_k_exclude` signature: `k` items per history, none of
        the output tokens in that history's `exclude` list (one list per history)."""
        if not signature.endswith("_top_k_exclude"):
            raise ValueError(f"exclude needs a <task>_top_k_exclude signature, not {signature!r}")
        items = pad_histories(histories, length)
        if len(exclude) != len(items):
            raise ValueError(f"exclude needs one list per history: {len(exclude)} for {len(items)}")
        inputs = {"items": items, "k": np.full(len(items), int(k), dtype=np.int32),
                  "exclude": pad_histories(exclude)}  # a leading "": never empty
        return _trim(self.call(inputs, signature), k)

    def call(self, inputs, signature=None):
        """One Predict call with raw named inputs; the channel's service config retries
        UNAVAILABLE within the call's deadline."""
        import grpc
        import tensorflow as tf

        request = self.request(inputs, signature)
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
            return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        except grpc.RpcError as error:
            code = error.code()
            where = f"{self.target} model {self.model_name!r} signature " \
                    f"{request.model_spec.signature_name!r}"
            tries = (f", up to {min(self.retries + 1, GRPC_MAX_ATTEMPTS)} attempts"
                     if code == grpc.StatusCode.UNAVAILABLE else "")
            raise ServingError(code.name, f"{error.details()} ({where}{tries})") from error

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RestClient:
    """`RestClient("http://localhost:8501", "peterrec").predict([["i1", "i2"]])`."""

    def __init__(self, base_url, model_name, signature="serving_default", version=None,
                 timeout=5.0, retries=3):
        self.base_url, self.model_name = base_url.rstrip("/"), model_name
        self.signature, self.version = signature, version
        self.timeout, self.retries = timeout, retries
        self._pool = None

    @property
    def url(self):
        version = f"/versions/{int(self.version)}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{self.model_name}{version}:predict"

    def predict(self, histories, k=None, signature=None, form="inputs", length=None):
        """`form="inputs"` (columnar) or `"instances"` (row) request bodies; `k` needs a
        `<task>_top_k` signature; `length`: see pad_histories."""
        padded = pad_histories(histories, length).tolist()
        body = {"signature_name": signature or self.signature}
        if k is not None and not body["signature_name"].endswith("_top_k"):
            raise ValueError(f"k needs a <task>_top_k signature, not {body['signature_name']!r}")
        if form == "instances":
            body["instances"] = [{"items": row, **({"k": int(k)} if k is not None else {})}
                                 for row in padded]
        elif form == "inputs":
            body["inputs"] = {"items": padded}
            if k is not None:
                body["inputs"]["k"] = [int(k)] * len(padded)
        else:
            raise ValueError(f"form must be 'inputs' or 'instances', got {form!r}")
        answer = self.post(body)
        # Serving drops the output name when a signature has a single output
        single = "user_embedding" if body["signature_name"].endswith("_user_embedding") else "output"
        if "outputs" in answer:
            outputs = answer["outputs"]
            outputs = {name: np.asarray(v) for name, v in outputs.items()} \
                if isinstance(outputs, dict) else {single: np.asarray(outputs)}
        else:
            predictions = answer.get("predictions", [])
            outputs = {key: np.asarray([p[key] for p in predictions]) for key in predictions[0]} \
                if predictions and isinstance(predictions[0], dict) else {single: np.asarray(predictions)}
        return _trim(outputs, k)

    def post(self, body):
        """POST one JSON body: a refused connection or a 503 is retried by `rest_retry`'s
        policy while the call's deadline allows, each attempt given the time left."""
        import urllib3

        data = json.dumps(body).encode()
        deadline = _Deadline(self.timeout)
        retry = rest_retry(self.retries)
        while True:
            left = deadline.left()
            try:
                if left <= 0:
                    raise urllib3.exceptions.ReadTimeoutError(None, self.url, "deadline")
                response = self.pool.request(
                    "POST", self.url, body=data, headers={"Content-Type": "application/json"},
                    timeout=urllib3.Timeout(total=left), retries=False)
            except (urllib3.exceptions.NewConnectionError,  # (a ConnectTimeoutError subclass)
                    urllib3.exceptions.ProtocolError) as error:
                try:
                    retry = retry.increment("POST", self.url, error=error)
                except urllib3.exceptions.MaxRetryError:
                    retry = None
                if retry is None or not self._sleep(retry, deadline):
                    raise ServingError("UNAVAILABLE", f"{error} ({self.url}, after "
                                       f"{self._attempts(retry)} attempt(s))") from error
                continue
            except (urllib3.exceptions.ConnectTimeoutError,
                    urllib3.exceptions.ReadTimeoutError) as error:
                raise ServingError("DEADLINE_EXCEEDED",
                                   f"no answer from {self.url} within {self.timeout}s") from error
            if response.status == 200:
                return json.loads(response.data.decode())
            if retry.is_retry("POST", response.status):
                try:
                    retry = retry.increment("POST", self.url, response=response)
                    if self._sleep(retry, deadline):
                        continue
                except urllib3.exceptions.MaxRetryError:
                    pass
            text = response.data.decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                pass
            raise ServingError(response.status, f"{text} ({self.url})")

    def _attempts(self, retry):
        return self.retries + 1 if retry is None else len(retry.history) + 1

    @staticmethod
    def _sleep(retry, deadline):
        """Sleep `retry`'s backoff and return True, or False when it would pass the deadline."""
        pause = retry.get_backoff_time()
        if pause >= deadline.left():
            return False
        time.sleep(pause)
        return True

    @property
    def pool(self):
        import urllib3

        if self._pool is None:
            self._pool = urllib3.PoolManager(retries=False)
        return self._pool
