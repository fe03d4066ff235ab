"""The ExecuTorch runner on small programs lowered here: names, dims, batches past the planned
bound, thread-pool sizing, and bad feeds and files as one-line BadInput."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from edgegate.errors import BadInput
from tests.quant.tiny_models import tiny_cnn

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch is not installed (pip install 'edgegate-nn[executorch]')",
)


@pytest.fixture(scope="module")
def cnn_pte(tmp_path_factory):
    """A small CNN with an SE gate, batch and image side dynamic."""
    from edgegate.exporters.executorch import export_pte

    module = tiny_cnn()
    path = tmp_path_factory.mktemp("cnn") / "cnn.pte"
    written = export_pte(
        module,
        (torch.randn(1, 3, 16, 16),),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_dims=[(0, 2, 3)],
    )
    return module, written


def _runner(path, threads=None):
    from edgegate.runtime import ExecuTorchRunner

    return ExecuTorchRunner(path, threads=threads)


def test_dynamic_dims_are_recorded_with_their_bounds(cnn_pte):
    _, cnn = cnn_pte
    assert cnn.inputs[0].shape == ["batch", 3, "height", "width"]
    assert cnn.ranges == {"images": {"batch": [1, 8], "height": [1, 16], "width": [1, 16]}}
    assert cnn.static_dims == [] and cnn.delegated_nodes > 0


def test_runner_matches_pytorch_across_batches_and_sizes(cnn_pte):
    module, written = cnn_pte
    rng = np.random.default_rng(0)
    with _runner(written.path) as runner:
        assert [s.name for s in runner.input_specs()] == ["images"]
        assert runner.output_names() == ["logits"]
        # 19 rows: past the planned batch of 8, so the runner runs three slices
        for shape in [(1, 3, 16, 16), (19, 3, 16, 16), (2, 3, 9, 13)]:
            x = rng.standard_normal(shape).astype(np.float32)
            got = runner.run({"images": x})["logits"]
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))
        assert runner.last_latency_ms > 0


@pytest.mark.parametrize(
    "feed, fragment",
    [
        ({"images": np.zeros((1, 3, 32, 16), np.float32)}, "height<=16"),  # past the bound
        ({"images": np.zeros((1, 1, 16, 16), np.float32)}, "takes shape"),  # channels fixed
        ({"images": np.zeros((1, 3, 16), np.float32)}, "takes shape"),
        ({"images": np.zeros((1, 3, 16, 16), np.float64)}, "expects float32"),
        ({}, "needs input"),
        ({"images": np.zeros((1, 3, 16, 16), np.float32), "z": np.zeros(1)}, "no input"),
    ],
)
def test_bad_feeds_are_bad_input(cnn_pte, feed, fragment):
    _, written = cnn_pte
    with _runner(written.path) as runner, pytest.raises(BadInput, match=fragment):
        runner.run(feed)


def test_threads_size_the_pool_while_no_method_is_loaded(cnn_pte):
    from edgegate.runtime.executorch_runner import threadpool_size

    _, written = cnn_pte
    with _runner(written.path, threads=1) as one:
        assert one.threads == 1 == threadpool_size()
        # a second program while the first is loaded: the pool is left as it is, and said so
        with _runner(written.path, threads=2) as two:
            assert two.threads == 1
            x = np.zeros((1, 3, 16, 16), np.float32)
            np.testing.assert_allclose(two.run({"images": x})["logits"],
                                       one.run({"images": x})["logits"])  # fmt: skip
    with _runner(written.path, threads=2) as again:
        assert again.threads == 2 == threadpool_size()


def test_a_pte_without_edgegate_record_runs_with_positional_names(tmp_path):
    from executorch.exir import to_edge_transform_and_lower

    module = torch.nn.Linear(4, 3).eval()
    program = torch.export.export(module, (torch.randn(2, 4),))
    path = tmp_path / "plain.pte"
    path.write_bytes(to_edge_transform_and_lower(program).to_executorch().buffer)
    x = np.ones((2, 4), np.float32)
    with _runner(path) as runner:
        assert [s.name for s in runner.input_specs()] == ["input0"]
        assert runner.input_specs()[0].shape == (2, 4)
        out = runner.run({"input0": x})["output0"]
    with torch.no_grad():
        np.testing.assert_allclose(out, module(torch.from_numpy(x)).numpy(), atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"not a program at all" * 10])
def test_a_corrupt_file_is_one_bad_input(tmp_path, content):
    path = tmp_path / "broken.pte"
    path.write_bytes(content)
    with pytest.raises(BadInput, match="not a loadable ExecuTorch program"), _runner(path):
        pass


def test_a_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"), _runner(tmp_path / "none.pte"):
        pass
