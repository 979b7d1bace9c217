"""jaxmlp.data.export: .npz and .safetensors round trips, and files that are not exports."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import export

NET = jaxmlp.Network((5, 7, 3), ("tanh", "softmax"), "categorical_cross_entropy")


def _params(dtype=jnp.float32):
    return jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=dtype)


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_round_trip_is_bit_for_bit_with_network_and_metadata(tmp_path, ext, dtype):
    params = _params(dtype)
    meta = {"preprocessing": {"feature_names": ["a", "b"]}, "epochs": 3}
    path = tmp_path / f"m{ext}"
    export.save(path, params, NET, metadata=meta)
    net, back, meta_back = export.load(path)
    assert net == NET and meta_back == meta
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    X = jnp.ones((5, 4), dtype)
    assert np.array_equal(jaxmlp.predict(net, back, X), jaxmlp.predict(NET, params, X))


def test_npz_layout_names_the_layers_as_in_the_derivations(tmp_path):
    export.save(tmp_path / "m.npz", _params(), NET)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["W[1]", "W[2]", "__jaxmlp__", "b[1]", "b[2]"]
        assert z["W[1]"].shape == (7, 5)


def test_bad_files_are_value_errors_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read .*junk.npz"):
        export.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", W=np.ones(3))
    with pytest.raises(ValueError, match="not a jaxmlp export"):
        export.load(tmp_path / "plain.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="cannot read .*junk.safetensors"):
        export.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="expected a file ending in .npz or .safetensors"):
        export.load(tmp_path / "m.pkl")
    # arrays that do not match the description
    export.save(tmp_path / "m.npz", _params(), NET)
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    arrays["W[2]"] = np.ones((3, 6), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"W\[2\] has shape \(3, 6\)"):
        export.load(tmp_path / "bad.npz")
    arrays["__jaxmlp__"] = np.array('{"format_version": 1, "network": {"sizes": [5, 7, 3], '
                                    '"activations": ["nope", "softmax"], "cost": '
                                    '"categorical_cross_entropy"}}')
    np.savez(tmp_path / "act.npz", **arrays)
    with pytest.raises(ValueError, match="cannot build.*register_activation"):
        export.load(tmp_path / "act.npz")


def test_save_checks_its_arguments_before_writing(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="net: expected a jaxmlp.Network"):
        export.save(path, _params(), "net")
    with pytest.raises(ValueError, match="params"):
        export.save(path, _params()[:1], NET)
    with pytest.raises(ValueError, match="metadata: expected a JSON-serialisable"):
        export.save(path, _params(), NET, metadata={"x": object()})
    bad = _params()
    bad[0]["W"] = bad[0]["W"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="non-finite"):
        export.save(path, bad, NET)
    assert not path.exists()
