"""The onnx2tf backend's guards against its known traps."""

import subprocess
import sys

import numpy as np
from onnx import TensorProto, helper

from packager.convert.onnx2tf_backend import SAMPLE_FILE, sanitize_node_names, write_sample_images


def test_invalid_scope_names_are_renamed_uniquely():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="Softmax@0"),
        helper.make_node("Relu", ["a"], ["b"], name=""),
        helper.make_node("Relu", ["b"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["d"], name="conv1"),
        helper.make_node("Relu", ["d"], ["y"], name="_private"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph)
    assert sanitize_node_names(proto) == 4
    names = [n.name for n in proto.graph.node]
    assert len(set(names)) == 5 and names[2] == "conv1"
    assert all("@" not in n and n and not n.startswith("_") for n in names)


def test_sample_images_come_from_the_users_data(tmp_path):
    samples = {"x": np.random.default_rng(0).random((30, 1, 3, 48, 192), dtype=np.float32)}
    assert write_sample_images(samples, tmp_path)
    written = np.load(tmp_path / SAMPLE_FILE)
    assert written.shape == (20, 48, 192, 3)
    np.testing.assert_array_equal(written[3], samples["x"][3, 0].transpose(1, 2, 0))
    assert not write_sample_images({"f": np.zeros((30, 1, 16, 40), np.float32)}, tmp_path / "none")


def test_worker_refuses_network_connections():
    code = (
        "import packager.convert.onnx2tf_worker as w\n"
        "w.block_network()\n"
        "import urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen('http://127.0.0.1:9/', timeout=2)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "runs offline" in out
