"""Train the example model: a small CNN on scikit-learn's bundled digits.

Trains in Keras (seconds on 2 cores), then writes the trained weights as an
ONNX graph in PyTorch's usual layout (NCHW input, dynamic batch "N"), the
form users bring to edgepack. Also writes the data splits:

    digits.onnx             input "image" (N,1,8,8) float32 in 0..1, output "scores" (N,10)
    calibration.npy         300 training images, (300,1,8,8): what the user calibrates with
    test_x.npy, test_y.npy  the held-out test split (never seen in training or calibration)

    python examples/digits/train.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 7


def load_splits():
    """(train_x, train_y, test_x, test_y); images (N,1,8,8) float32 in 0..1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def train_keras(train_x, train_y):
    from edge_runtime.native_logs import filtered_stderr, quiet_process

    quiet_process()
    with filtered_stderr():  # TensorFlow's lines no log level turns off (loading it; the GPU look-up)
        return _fit(train_x, train_y)


def _fit(train_x, train_y):
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_x.transpose(0, 2, 3, 1), train_y, epochs=25, batch_size=32, verbose=0)
    return model


def to_onnx(model, path: Path) -> None:
    """Write the trained Keras CNN as an NCHW ONNX graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv1, conv2, _, _, dense1, dense2 = model.layers
    w1, b1 = conv1.get_weights()
    w2, b2 = conv2.get_weights()
    d1, c1 = dense1.get_weights()
    d2, c2 = dense2.get_weights()
    # Keras flattens (H, W, C); ONNX Flatten of NCHW gives (C, H, W).
    d1 = d1.reshape(4, 4, 32, -1).transpose(2, 0, 1, 3).reshape(4 * 4 * 32, -1)
    inits = [
        numpy_helper.from_array(w1.transpose(3, 2, 0, 1).copy(), "conv1.weight"),
        numpy_helper.from_array(b1, "conv1.bias"),
        numpy_helper.from_array(w2.transpose(3, 2, 0, 1).copy(), "conv2.weight"),
        numpy_helper.from_array(b2, "conv2.bias"),
        numpy_helper.from_array(d1.copy(), "fc1.weight"),
        numpy_helper.from_array(c1, "fc1.bias"),
        numpy_helper.from_array(d2, "fc2.weight"),
        numpy_helper.from_array(c2, "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["scores"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgepack-example")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def main(out_dir: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_x, test_x, train_y, test_y = load_splits()
    model = train_keras(train_x, train_y)
    to_onnx(model, out / "digits.onnx")

    # The ONNX graph must compute what Keras learned.
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "digits.onnx"), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"image": test_x})[0]
    keras_scores = np.asarray(model(test_x.transpose(0, 2, 3, 1)))
    keras_probs = np.exp(keras_scores) / np.exp(keras_scores).sum(1, keepdims=True)
    if not np.allclose(onnx_scores, keras_probs, atol=1e-4):
        raise SystemExit("ONNX export does not match the Keras model")

    rng = np.random.default_rng(SEED)
    calib = train_x[rng.choice(len(train_x), 300, replace=False)]
    np.save(out / "calibration.npy", calib)
    np.save(out / "test_x.npy", test_x)
    np.save(out / "test_y.npy", test_y)
    acc = float((onnx_scores.argmax(1) == test_y).mean())
    print(f"trained digits CNN: float ONNX test accuracy {acc * 100:.2f}% on {len(test_y)} held-out images")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/digits")
