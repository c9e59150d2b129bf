"""Network blocks: shapes, the Nature DQN's parameter count by hand, dueling algebra, initialisers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import UserError
from core.nets import MLP, ConvDecoder28, ConvEncoder28, DuelingHead, NatureTorso, init_weights, make_activation


def test_nature_torso_matches_the_paper_by_hand() -> None:
    torso = NatureTorso()
    by_hand = (4 * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 64 * 3 * 3 + 64) + (3136 * 512 + 512)
    assert sum(p.numel() for p in torso.parameters()) == by_hand
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    out = torso(frames)
    assert out.shape == (2, 512) and (out >= 0).all()
    assert torch.allclose(out, torso(frames.float() / 255.0))


def test_dueling_head_streams() -> None:
    head = DuelingHead(16, 5, hidden=32)
    features = torch.randn(7, 16)
    q = head(features)
    value, advantage = head.value(features), head.advantage(features)
    assert q.shape == (7, 5)
    assert torch.allclose(q.mean(dim=1, keepdim=True), value, atol=1e-5)
    assert torch.allclose(q - q.mean(dim=1, keepdim=True), advantage - advantage.mean(dim=1, keepdim=True), atol=1e-5)


def test_mlp_layout_with_layer_norm() -> None:
    net = MLP(3, [8, 6], 2, activation="tanh", layer_norm=True)
    kinds = [type(layer) for layer in net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear, nn.LayerNorm, nn.Tanh, nn.Linear]
    assert net(torch.randn(4, 3)).shape == (4, 2)
    assert [type(layer) for layer in MLP(3, [], 1)] == [nn.Linear]
    assert isinstance(MLP(3, [4], 2, output_activation="sigmoid")[-1], nn.Sigmoid)


def test_conv_encoder_decoder_shapes() -> None:
    encoder, decoder = ConvEncoder28(20), ConvDecoder28(20)
    images = torch.rand(3, 1, 28, 28)
    assert encoder(images).shape == (3, 20)
    assert torch.allclose(encoder(images.view(3, 784)), encoder(images))
    assert decoder(torch.randn(3, 20)).shape == (3, 1, 28, 28)
    assert ConvDecoder28(5, channels=3)(torch.randn(2, 5)).shape == (2, 3, 28, 28)


def test_initialisers() -> None:
    torch.manual_seed(0)
    wide = init_weights(nn.Linear(1000, 1000), "normal", std=0.02, bias=0.1)
    assert wide.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.all(wide.bias == 0.1)
    square = init_weights(nn.Linear(64, 64), "orthogonal")
    assert torch.allclose(square.weight @ square.weight.T, torch.eye(64), atol=1e-5)
    untouched = nn.Linear(4, 4)
    before = untouched.weight.clone()
    assert torch.equal(init_weights(untouched, "default").weight, before)
    conv = init_weights(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 3, 3)), "xavier_uniform")
    assert all(torch.all(layer.bias == 0) for layer in conv)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"unknown activation 'rleu' \(did you mean 'relu'.*\); valid: .*tanh"):
        make_activation("rleu")
    with pytest.raises(UserError, match=r"unknown init scheme 'gaussian'; valid: .*orthogonal"):
        init_weights(nn.Linear(2, 2), "gaussian")
