"""Network blocks: shapes, the Nature DQN's parameter count by hand, dueling algebra, initialisers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import UserError
from core.nets import (
    ACTIVATIONS, MLP, ConvDecoder28, ConvEncoder28, DuelingHead, NatureTorso, init_weights, make_activation,
    same_padding,
)


def test_nature_torso_matches_the_paper_by_hand() -> None:
    torso = NatureTorso()
    conv1 = 4 * 32 * 8 * 8 + 32
    conv2 = 32 * 64 * 4 * 4 + 64
    conv3 = 64 * 64 * 3 * 3 + 64
    fc = 64 * 7 * 7 * 512 + 512
    assert sum(p.numel() for p in torso.parameters()) == conv1 + conv2 + conv3 + fc == 1_684_128
    assert torso.out_features == 512
    assert sum(p.numel() for p in NatureTorso(in_channels=1).parameters()) == conv1 - 3 * 32 * 8 * 8 + conv2 + conv3 + fc


def test_nature_torso_scales_bytes_and_leaves_floats_alone() -> None:
    torch.manual_seed(0)
    torso = NatureTorso()
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    out = torso(frames)
    assert out.shape == (2, 512) and (out >= 0).all()
    assert torch.allclose(out, torso(frames.float() / 255.0), atol=1e-6)
    assert not torch.allclose(out, torso(frames.float()))
    # The scale folded into the first convolution trains its weights as scaled inputs would.
    first = torso.layers[0].weight
    by_bytes = torch.autograd.grad(torso(frames).square().sum(), first)[0]
    by_floats = torch.autograd.grad(torso(frames.float() / 255.0).square().sum(), first)[0]
    assert torch.allclose(by_bytes, by_floats, rtol=1e-4, atol=1e-6)


def _same_conv_reference(image: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """A convolution with TensorFlow's SAME padding written out: output ceil(n / stride), the zeros split with the
    odd one after (TensorFlow's conv2d documentation), one dot product per output pixel."""
    channels, size, _ = image.shape
    out_channels, _, kernel, _ = weight.shape
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    padded = np.zeros((channels, size + total, size + total))
    padded[:, total // 2:total // 2 + size, total // 2:total // 2 + size] = image
    result = np.empty((out_channels, out, out))
    for row in range(out):
        for col in range(out):
            patch = padded[:, row * stride:row * stride + kernel, col * stride:col * stride + kernel]
            result[:, row, col] = np.tensordot(weight, patch, axes=3) + bias
    return result


def test_same_padding_torso_matches_a_written_out_reference() -> None:
    """Dopamine's (flax's) SAME padding: 84 -> 21 -> 11 -> 11, so 7,744 features into the dense layer."""
    assert [same_padding(84, 8, 4), same_padding(21, 4, 2), same_padding(11, 3, 1)] == [(21, 2, 2), (11, 1, 2), (11, 1, 1)]
    torch.manual_seed(0)
    torso = NatureTorso(padding="same")
    convs = [layer for layer in torso.layers if isinstance(layer, nn.Conv2d)]
    dense = [layer for layer in torso.layers if isinstance(layer, nn.Linear)][0]
    assert dense.in_features == 64 * 11 * 11
    # The layer indices of checkpoints written when every SAME pad was a ZeroPad2d of its own.
    assert list(torso.state_dict()) == [f"layers.{i}.{name}" for i in (0, 3, 6, 9) for name in ("weight", "bias")]
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    out = torso(frames).detach().numpy()
    for index in range(2):
        features = frames[index].numpy().astype(np.float64) / 255.0
        for conv in convs:
            features = np.maximum(_same_conv_reference(features, conv.weight.detach().double().numpy(),
                                                       conv.bias.detach().double().numpy(), conv.stride[0]), 0.0)
        expected = np.maximum(dense.weight.detach().double().numpy() @ features.reshape(-1)
                              + dense.bias.detach().double().numpy(), 0.0)
        np.testing.assert_allclose(out[index], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="padding"):
        NatureTorso(padding="full")


def test_layer_norm_follows_the_padded_shapes() -> None:
    torso = NatureTorso(norm="layer", padding="same")
    shapes = [tuple(layer.normalized_shape) for layer in torso.layers if isinstance(layer, nn.LayerNorm)]
    assert shapes == [(32, 21, 21), (64, 11, 11), (64, 11, 11), (512,)]
    assert torso(torch.zeros(1, 4, 84, 84, dtype=torch.uint8)).shape == (1, 512)


def test_dueling_head_without_hidden_layers_is_two_linear_outputs() -> None:
    """Dopamine's FullRainbowNetwork: value and advantage straight from the shared features."""
    torch.manual_seed(0)
    head = DuelingHead(16, 5, hidden=0)
    assert isinstance(head.value, nn.Linear) and isinstance(head.advantage, nn.Linear)
    assert sum(p.numel() for p in head.parameters()) == 16 * 6 + 6
    features = torch.randn(7, 16)
    value = features @ head.value.weight.T + head.value.bias
    advantage = features @ head.advantage.weight.T + head.advantage.bias
    assert torch.allclose(head(features), value + advantage - advantage.mean(dim=1, keepdim=True), atol=1e-6)


def test_dueling_head_streams() -> None:
    torch.manual_seed(0)
    head = DuelingHead(16, 5, hidden=32)
    features = torch.randn(7, 16)
    q = head(features)
    value, advantage = head.value(features), head.advantage(features)
    assert q.shape == (7, 5) and value.shape == (7, 1) and advantage.shape == (7, 5)
    assert torch.allclose(q.mean(dim=1, keepdim=True), value, atol=1e-5)
    assert torch.allclose(q - q.mean(dim=1, keepdim=True), advantage - advantage.mean(dim=1, keepdim=True), atol=1e-5)
    assert [layer.out_features for layer in head.value if isinstance(layer, nn.Linear)] == [32, 1]


def test_mlp_layout_with_layer_norm() -> None:
    net = MLP(3, [8, 6], 2, activation="tanh", layer_norm=True)
    assert [type(layer) for layer in net] == [nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear]
    assert [net[1].normalized_shape, net[4].normalized_shape] == [(8,), (6,)]
    assert net(torch.randn(4, 3)).shape == (4, 2) and net.out_features == 2
    assert [type(layer) for layer in MLP(3, [4], 2)] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [type(layer) for layer in MLP(3, [], 1)] == [nn.Linear]
    assert isinstance(MLP(3, [4], 2, output_activation="sigmoid")[-1], nn.Sigmoid)


def test_activations() -> None:
    assert set(ACTIVATIONS) == {"relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu", "silu", "identity"}
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(make_activation("leaky_relu")(x), torch.tensor([-0.2, 2.0]))
    assert torch.equal(ACTIVATIONS["leaky_relu"]()(x), torch.tensor([-0.2, 2.0]))
    assert torch.equal(make_activation("identity")(x), x)
    assert make_activation("relu") is not make_activation("relu")


def test_conv_encoder_decoder_shapes() -> None:
    encoder, decoder = ConvEncoder28(20), ConvDecoder28(20)
    images = torch.rand(3, 1, 28, 28)
    assert encoder(images).shape == (3, 20) and encoder.out_features == 20
    assert torch.allclose(encoder(images.view(3, 784)), encoder(images))
    assert decoder(torch.randn(3, 20)).shape == (3, 1, 28, 28)
    colour = ConvEncoder28(5, channels=3, activation="leaky_relu")
    rgb = torch.rand(2, 3, 28, 28)
    assert torch.allclose(colour(rgb.reshape(2, 3 * 784)), colour(rgb))
    assert ConvDecoder28(5, channels=3)(torch.randn(2, 5)).shape == (2, 3, 28, 28)
    with pytest.raises(RuntimeError):
        encoder(torch.rand(3, 2 * 784))


def test_normal_and_orthogonal_initialisers() -> None:
    torch.manual_seed(0)
    wide = init_weights(nn.Linear(1000, 1000), "normal", std=0.02, bias=0.1)
    assert wide.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert wide.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert torch.all(wide.bias == 0.1)
    square = init_weights(nn.Linear(64, 64), "orthogonal")
    assert torch.allclose(square.weight @ square.weight.T, torch.eye(64), atol=1e-5)
    scaled = init_weights(nn.Linear(64, 64), "orthogonal", gain=math.sqrt(2))
    assert torch.allclose(scaled.weight @ scaled.weight.T, 2 * torch.eye(64), atol=1e-5)


def test_kaiming_and_xavier_follow_their_formulas() -> None:
    torch.manual_seed(0)
    fan_in, fan_out = 800, 400
    kaiming = init_weights(nn.Linear(fan_in, fan_out), "kaiming_normal")
    assert kaiming.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    kaiming_uniform = init_weights(nn.Linear(fan_in, fan_out), "kaiming_uniform")
    assert kaiming_uniform.weight.abs().max().item() == pytest.approx(math.sqrt(6 / fan_in), rel=0.01)
    xavier = init_weights(nn.Linear(fan_in, fan_out), "xavier_uniform", gain=2.0)
    assert xavier.weight.abs().max().item() == pytest.approx(2.0 * math.sqrt(6 / (fan_in + fan_out)), rel=0.01)


def test_init_reaches_every_weighted_layer_and_default_touches_nothing() -> None:
    layers = nn.Sequential(
        nn.Conv1d(3, 8, 3), nn.Conv2d(3, 8, 3), nn.Conv3d(3, 8, 3),
        nn.ConvTranspose1d(8, 3, 3), nn.ConvTranspose2d(8, 3, 3), nn.Sequential(nn.Linear(4, 4)),
    )
    init_weights(layers, "normal", std=0.0, bias=0.5)
    weighted = [m for m in layers.modules() if hasattr(m, "weight")]
    assert len(weighted) == 6
    assert all(torch.all(m.weight == 0) and torch.all(m.bias == 0.5) for m in weighted)
    norm = nn.LayerNorm(4)
    untouched = nn.Sequential(nn.Linear(4, 4), norm)
    before = [p.clone() for p in untouched.parameters()]
    assert init_weights(untouched, "default") is untouched
    assert all(torch.equal(a, b) for a, b in zip(before, untouched.parameters()))
    init_weights(untouched, "orthogonal", bias=0.3)
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"unknown activation 'rleu' \(did you mean 'relu'.*\); valid: .*tanh"):
        make_activation("rleu")
    with pytest.raises(UserError, match=r"unknown activation 'swish'; valid: elu, gelu, identity, leaky_relu"):
        MLP(2, [2], 1, activation="swish")
    with pytest.raises(UserError, match=r"unknown init scheme 'gaussian'; valid: default, kaiming_normal, .*orthogonal"):
        init_weights(nn.Linear(2, 2), "gaussian")
