"""Channel pruning of the small CNN: the slicing exact on a network whose dropped channels carry nothing, the
batch-norm-scaled criterion, and the technique on a SmallCNN fitted on elpv images (agrees with the original,
fewer parameters, exports to ONNX faithfully, leaves its input alone)."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.candidates.image import ImageFeatures, SmallCNN
from frugalml.candidates.small_cnn import network
from frugalml.compression import TECHNIQUES, compress, with_final
from frugalml.compression.prune_channels import ChannelPruneConfig, prune_channels
from frugalml.data import load_task
from frugalml.evaluation.cost import count_params
from frugalml.runtime.sessions import ort_session

import torch  # an installed extra: a missing one fails, never skips


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on two cores shared with other work, two threads' spin-waits made these tests take 80 s
    instead of 9 (and one thread keeps the fitted network the same from run to run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blocks(net):
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    return list(zip(convs, [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]))


def test_pruning_channels_that_carry_nothing_changes_no_output():
    """Dropped channels get gamma = beta = 0: batch norm outputs exactly 0 there, so do the ReLU and the max
    pool, and a zero input channel adds 0 to the next convolution (zero padding included) and to the linear
    layer. Their importance is 0, the lowest, so keep=0.5 drops exactly them and the outputs stay as they were."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = network(1, (8, 16, 32), 2).eval()
    dropped = []
    with torch.no_grad():
        for conv, bn in _blocks(net):
            w = conv.out_channels
            bn.weight.copy_(torch.rand(w) + 0.5)
            bn.bias.copy_(torch.randn(w))
            bn.running_mean.copy_(torch.randn(w))
            bn.running_var.copy_(torch.rand(w) + 0.5)
            bn.num_batches_tracked.fill_(7)
            d = np.sort(rng.choice(w, w // 2, replace=False))
            bn.weight[d] = 0.0
            bn.bias[d] = 0.0
            dropped.append(d)
    x = torch.rand(5, 1, 16, 16) * 255
    with torch.no_grad():
        before = net(x)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        pruned, widths = prune_channels(net, 0.5)
        after = pruned(x)
    assert widths == (8 // 2, 16 // 2, 32 // 2) and not pruned.training
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    pruned_bn = [bn for _, bn in _blocks(pruned)]
    for (conv, bn), new_bn, d in zip(_blocks(net), pruned_bn, dropped):
        kept = np.setdiff1d(np.arange(conv.out_channels), d)  # in their original order
        torch.testing.assert_close(new_bn.running_var, bn.running_var[kept], atol=0, rtol=0)
        assert int(new_bn.num_batches_tracked) == 7
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # the input is not modified
    assert prune_channels(net, 0.25)[1] == (2, 4, 8) and prune_channels(net, 0.01)[1] == (1, 1, 1)


def test_the_criterion_is_the_filter_norm_scaled_by_batch_norm():
    """A large filter that batch norm shrinks carries less than a small one it passes at full scale."""
    net = network(1, (2, 2, 2), 2).eval()
    (conv, bn), *_ = _blocks(net)
    with torch.no_grad():
        conv.weight[0].fill_(1.0)  # L1 norm 9
        conv.weight[1].fill_(0.1)  # L1 norm 0.9
        bn.weight.copy_(torch.tensor([0.01, 1.0]))  # 9 * 0.01 < 0.9 * 1
        bn.running_var.fill_(1.0)
        pruned, widths = prune_channels(net, 0.5)
        (new_conv, _), *_ = _blocks(pruned)
    assert widths == (1, 1, 1)
    torch.testing.assert_close(new_conv.weight[0], conv.weight[1], atol=0, rtol=0)


@pytest.fixture(scope="module")
def elpv_cnn():
    """A SmallCNN fitted on 80 elpv images at 32 px (3 epochs of batch 16); 80 other images held out."""
    task = load_task("builtin:elpv")
    y = np.asarray(task.y)
    fit, held = train_test_split(np.arange(len(y)), train_size=80, test_size=80, stratify=y, random_state=0)
    X, Y, X_held = task.X.iloc[fit], y[fit], task.X.iloc[held]
    torch.manual_seed(0)  # SmallCNN draws its initial weights before seeding: seed them here, for a stable test
    model = SmallCNN(ImageFeatures("pixels", 32), epochs=3, batch_size=16)
    pipe = build_pipeline(model, task.schema, scale=False).fit(X, Y)
    return pipe, (X, Y), X_held


def test_pruned_cnn_agrees_is_smaller_and_exports(elpv_cnn):
    pipe, calibration, X_held = elpv_cnn
    original = pipe[-1]
    before, weights = pipe.predict_proba(X_held), bytes(original.weights_)
    t = TECHNIQUES.get("cnn-prune-channels")
    assert t.applies_to(pipe) and t.needs_data and t.stage == 1
    assert [c.keep for c in t.settings(pipe)] == [0.25, 0.5, 0.75]

    new = compress(pipe, ChannelPruneConfig(0.5), calibration=calibration)
    model = new[-1]
    assert original.widths_ == (16, 32, 64) and model.widths_ == (8, 16, 32)
    assert count_params(new) < count_params(pipe) / 3  # conv weights scale with in x out channels
    proba = new.predict_proba(X_held)
    agree = np.mean(proba.argmax(1) == before.argmax(1))
    constant = max(np.mean(before.argmax(1) == k) for k in (0, 1))  # 0.81: predicting "no" throughout
    # Observed 0.90 here (0.94-1.0 with other initial seeds); pruned without fine-tuning it predicts "no"
    # throughout, which agrees as often as that constant.
    assert agree >= 0.85 and agree > constant + 0.05, (agree, constant)
    np.testing.assert_array_equal(pipe.predict_proba(X_held), before)  # the input pipeline is not modified
    assert bytes(original.weights_) == weights and original.widths_ == (16, 32, 64)

    pixels = model.pixel_tensor(model.features_.transform(new[:-1].transform(X_held))).numpy()
    onnx = ort_session(model.export_onnx()).run(["probabilities"], {"image": pixels})[0]
    np.testing.assert_allclose(onnx, proba, atol=1e-4, rtol=0)


def test_applies_only_to_an_uncompressed_small_cnn(elpv_cnn):
    t = TECHNIQUES.get("cnn-prune-channels")
    task = load_task(linear_data(n=120), "label")
    linear = build_pipeline(CANDIDATES.get("linear").build("classification", 0), task.schema).fit(task.X, task.y)
    assert not t.applies_to(linear)
    pipe = elpv_cnn[0]
    model = pipe[-1]
    graph = model.on_graph(np.frombuffer(model.export_onnx(), dtype=np.uint8).copy())
    assert graph.compressed and not t.applies_to(with_final(pipe, graph))
