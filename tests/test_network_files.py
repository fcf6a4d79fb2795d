"""Network files that say what they are: fastnn.io.save_network / load_network."""
import json
import pickle
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import io
from fastnn.nets import MultiLayerNet, TwoLayerNet

X = np.random.default_rng(0).random((5, 12))


def networks():
    yield TwoLayerNet(12, 6, 4, rng=1)
    yield TwoLayerNet(12, 6, 4, dtype=np.float32, rng=2, exact_loss=True)
    yield MultiLayerNet(12, [7, 5], 4, activation="sigmoid", rng=3)
    yield MultiLayerNet(12, [], 4, activation="identity", weight_decay_lambda=0.1, rng=4,
                        dtype=np.float32)


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
@pytest.mark.parametrize("index", range(4))
def test_a_network_comes_back_as_it_was(tmp_path, suffix, index):
    network = list(networks())[index]
    path = tmp_path / ("net" + suffix)
    io.save_network(path, network, info={"dataset": "digits", "test_accuracy": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a described file needs no guess
        loaded, description = io.load_network(path, return_description=True)
    assert type(loaded) is type(network)
    assert (loaded.activation, loaded.dtype, loaded.exact_loss) == \
        (network.activation, network.dtype, network.exact_loss)
    assert loaded.weight_decay_lambda == network.weight_decay_lambda
    assert sorted(loaded.params) == sorted(network.params)
    for key, value in network.params.items():
        assert loaded.params[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.params[key], value)
    np.testing.assert_array_equal(loaded.predict(X.astype(network.dtype)),
                                  network.predict(X.astype(network.dtype)))
    assert description["info"] == {"dataset": "digits", "test_accuracy": 0.5}
    assert description["fastnn"] == fastnn.__version__
    assert description["class"] == type(network).__name__


def test_the_description_is_plain_json_readable_without_fastnn(tmp_path):
    network = MultiLayerNet(12, [7], 4, activation="sigmoid", rng=0)
    io.save_network(tmp_path / "n.npz", network)
    with np.load(tmp_path / "n.npz", allow_pickle=False) as archive:
        text = archive[io.NETWORK_MEMBER].tobytes().decode("utf-8")
    described = json.loads(text)
    assert described["config"]["sizes"] == [12, 7, 4]
    assert described["config"]["activation"] == "sigmoid"
    assert described["dtype"] == "float64" and described["state"] == []
    # the book's code reads a .pkl as a dict and finds its arrays where it looks
    io.save_network(tmp_path / "n.pkl", network)
    with open(tmp_path / "n.pkl", "rb") as f:
        book_view = pickle.load(f)
    np.testing.assert_array_equal(book_view["W1"], network.params["W1"])


@pytest.mark.parametrize("suffix, guessed", [(".npz", "relu"), (".pkl", "sigmoid")])
def test_weights_alone_still_load_with_a_warning_that_names_the_guess(tmp_path, suffix, guessed):
    network = MultiLayerNet(12, [7], 4, activation="sigmoid", rng=0)
    path = tmp_path / ("bare" + suffix)
    io.save_params(path, network.params)
    with pytest.warns(io.BareWeightsWarning, match=f"{guessed} hidden layers"):
        loaded, description = io.load_network(path, return_description=True)
    assert description is None and loaded.activation == guessed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        told = io.load_network(path, activation="sigmoid")
    np.testing.assert_array_equal(told.predict(X), network.predict(X))


def test_a_described_file_refuses_another_activation(tmp_path):
    io.save_network(tmp_path / "n.npz", TwoLayerNet(12, 6, 4, rng=0))
    with pytest.raises(ValueError, match="relu hidden layers, not sigmoid"):
        io.load_network(tmp_path / "n.npz", activation="sigmoid")
    with pytest.raises(ValueError, match="activation must be one of"):
        io.load_network(tmp_path / "n.npz", activation="tanh")


def _rewrite(path, edit):
    """The file at ``path`` with its description edited by ``edit(dict)``, or its arrays by
    ``edit`` when it returns arrays."""
    arrays = io.load_params(path)
    description = json.loads(arrays[io.NETWORK_MEMBER].tobytes())
    result = edit(description, arrays)
    if result is not None:
        arrays = result
    else:
        arrays[io.NETWORK_MEMBER] = np.frombuffer(json.dumps(description).encode(), np.uint8)
    io.save_params(path, arrays)


@pytest.mark.parametrize("edit, message", [
    (lambda d, a: d.update({"class": "os.system"}), "which this fastnn cannot rebuild"),
    (lambda d, a: d.update({"version": 99}), "version 99"),
    (lambda d, a: d.update({"format": "other"}), "is not a fastnn.network description"),
    (lambda d, a: d.update({"params": ["W1"]}), "the description lists arrays"),
    (lambda d, a: d.update({"dtype": "float32"}), "a float32 network with arrays of dtypes"),
    (lambda d, a: d["config"].update({"sizes": [12, 9, 4]}), "must have shape"),
    (lambda d, a: d["config"].__delitem__("activation"), "missing 'activation'"),
    (lambda d, a: d.update({"config": []}), "needs 'config' as a dict"),
    (lambda d, a: {**a, io.NETWORK_MEMBER: np.frombuffer(b"\xff{", np.uint8)}, "not UTF-8 JSON"),
    (lambda d, a: {**a, io.NETWORK_MEMBER: np.zeros(3)}, "must be a 1-D uint8 array"),
])
def test_descriptions_that_do_not_fit_are_refused_naming_the_file(tmp_path, edit, message):
    path = tmp_path / "n.npz"
    io.save_network(path, TwoLayerNet(12, 6, 4, rng=0))
    _rewrite(path, edit)
    with pytest.raises(ValueError, match=message) as info:
        io.load_network(path)
    assert str(path) in str(info.value)


def test_what_save_network_refuses(tmp_path):
    class Other:
        pass

    with pytest.raises(ValueError, match="save_network saves TwoLayerNet, MultiLayerNet"):
        io.save_network(tmp_path / "n.npz", Other())
    with pytest.raises(ValueError, match="JSON-serialisable"):
        io.save_network(tmp_path / "n.npz", TwoLayerNet(3, 2, 2), info={"x": float("nan")})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary


def test_files_that_are_no_network_are_refused(tmp_path):
    io.save_params(tmp_path / "junk.npz", {"a": np.zeros(3)})
    with pytest.warns(io.BareWeightsWarning), pytest.raises(ValueError, match="not the weights"):
        io.load_network(tmp_path / "junk.npz")
