"""Facts read off a release `.meta` graph: causal or not, the patch insertion, the pooling."""

from peterrec_tf.conversion.errors import ConversionError

#: Ops looked through when following a tensor back to what computed it.
PASS_THROUGH = ("Identity", "ExpandDims", "Squeeze", "Reshape")


class Graph:
    """A GraphDef with lookups by node name."""

    def __init__(self, graph_def, path):
        self.nodes = {node.name: node for node in graph_def.node}
        self.graph_def = graph_def
        self.path = path

    def node(self, tensor):
        return self.nodes.get(tensor.split(":")[0].lstrip("^"))

    def through(self, tensor):
        """The first node behind `tensor` that is not a pass-through op."""
        node = self.node(tensor)
        for _ in range(16):
            if node is None or node.op not in PASS_THROUGH or not node.input:
                return node
            node = self.node(node.input[0])
        return node

    def constant(self, tensor):
        """The value of a Const node (as a Python list or scalar), or None."""
        node = self.through(tensor)
        if node is None or node.op != "Const":
            return None
        from tensorflow.python.framework import tensor_util

        return tensor_util.MakeNdarray(node.attr["value"].tensor).tolist()


def infer_causal(graph, block_scope):
    """Causal convs pad explicitly on the left (a `Pad` op in the conv's scope).

    Non-causal convs use SAME padding, which TF1 lowers to a plain Conv2D (rate 1) or
    SpaceToBatchND + VALID Conv2D (rate > 1): neither has a Pad op, so the Pad op, not
    the Conv2D padding attribute, is the evidence.
    """
    convs = 0
    for node in graph.graph_def.node:
        for conv in ("dilated_conv1", "dilated_conv2"):
            if node.name.startswith(f"{block_scope}/{conv}/"):
                if node.op in ("Pad", "PadV2") and "/convolution" not in node.name:
                    return True
                convs += node.op == "Conv2D"
    if not convs:
        raise ConversionError(f"{graph.path}: cannot tell causal from the graph: no conv in "
                              f"{block_scope}")
    return False


def infer_insertion(graph, block_scope):
    """Serial (b) when mp_1 consumes conv1's output; parallel (d) when it reads the block input."""
    def producers(tensor, depth=0):
        node = graph.node(tensor)
        if node is None or depth > 6:
            return
        yield node.name
        if node.op in ("Identity", "ExpandDims", "Squeeze"):
            for inp in node.input:
                yield from producers(inp, depth + 1)

    for node in graph.graph_def.node:
        if node.name.startswith(f"{block_scope}/mp_1/mp_conv1_down_0/") and node.op == "Conv2D":
            sources = list(producers(node.input[0]))
            if any(s.startswith(f"{block_scope}/dilated_conv1/") for s in sources):
                return "b"
            return "d"
    raise ConversionError(f"{graph.path}: cannot tell the insertion from the graph: no mp_1 "
                          f"in {block_scope}")


def _axis_one_slice(graph, node):
    """'first' / 'last' for a StridedSlice taking one position of axis 1, else None."""
    if node is None or node.op != "StridedSlice" or len(node.input) < 4:
        return None
    begin, end = graph.constant(node.input[1]), graph.constant(node.input[2])
    strides = graph.constant(node.input[3])
    if not (isinstance(begin, list) and isinstance(end, list) and len(begin) >= 2):
        return None
    if strides is not None and strides[1] != 1:
        return None
    begin_masked = bool(node.attr["begin_mask"].i & 2)
    end_masked = bool(node.attr["end_mask"].i & 2)
    shrunk = bool(node.attr["shrink_axis_mask"].i & 2)
    start = 0 if begin_masked else begin[1]
    if start == -1 and (end_masked or end[1] == 0 or shrunk):
        return "last"
    if start == 0 and (shrunk or (not end_masked and end[1] == 1)):
        return "first"
    return None


def _reduces_axis_one(graph, node):
    axis = graph.constant(node.input[1]) if len(node.input) > 1 else None
    return axis in (1, [1])


def infer_pooling(graph):
    """The user vector that feeds the target-item scores: last, first_last or mean.

    The scores are `target-item/MatMul(ExpandDims(user), ...)`; `user` is a Mean over
    axis 1 of the hidden states (mean), the Mean (or the slice alone) of the last
    position's slice (last), or the Add of the first and last positions (first_last).
    """
    expand = graph.nodes.get("target-item/ExpandDims")
    if expand is None:
        matmul = graph.nodes.get("target-item/MatMul")
        if matmul is None:
            raise ConversionError(f"{graph.path}: cannot infer the pooling: no "
                                  "target-item/ExpandDims or target-item/MatMul in the graph "
                                  "(pass --pooling=last|first_last|mean)")
        expand = graph.node(matmul.input[0])
    user = graph.through(expand.input[0])
    if user is not None and user.op == "Mean" and _reduces_axis_one(graph, user):
        sliced = graph.through(user.input[0])
        if _axis_one_slice(graph, sliced) == "last":
            return "last"
        if sliced is not None and sliced.op != "StridedSlice":
            return "mean"
    elif user is not None and user.op in ("Add", "AddV2"):
        ends = sorted(_axis_one_slice(graph, graph.through(i)) or "" for i in user.input[:2])
        if ends == ["first", "last"]:
            return "first_last"
    elif _axis_one_slice(graph, user) == "last":
        return "last"
    found = f"{user.op} {user.name}" if user is not None else "nothing"
    raise ConversionError(f"{graph.path}: cannot infer the pooling from the user vector "
                          f"({found} feeds target-item/ExpandDims); pass "
                          "--pooling=last|first_last|mean")
