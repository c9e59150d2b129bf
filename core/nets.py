"""Network building blocks shared by the agents and the generative models."""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.registry import unknown_name_message

# Factories rather than bare classes, so that every way of building "leaky_relu" gets DCGAN's 0.2 slope.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": partial(nn.LeakyReLU, negative_slope=0.2),
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name; a UserError listing the valid names for an unknown one."""
    if name not in ACTIVATIONS:
        raise UserError(unknown_name_message("activation", name, list(ACTIVATIONS)))
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Linear layers on (B, in_features), each hidden one followed by [LayerNorm,] activation."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "relu",
        layer_norm: bool = False,
        output_activation: str = "identity",
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(make_activation(activation))
            width = size
        layers.append(nn.Linear(width, out_features))
        if output_activation != "identity":
            layers.append(make_activation(output_activation))
        super().__init__(*layers)
        self.out_features = out_features


NORMS = ("none", "layer")
PADDINGS = ("valid", "same")
# The Nature convolutions as (out channels, kernel, stride), on 84x84 frames.
NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
FRAME_SIZE = 84


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's (and flax's) SAME padding of one axis: the output size ceil(size / stride) and the zeros
    before and after, the odd one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def is_channels_last(weight: torch.Tensor) -> bool:
    """True for a 4-d weight stored channels-last (NHWC), the layout `Precision.prepare` gives conv nets."""
    return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


class NatureTorso(nn.Module):
    """Mnih et al. (2015) convolutions: (B, 4, 84, 84) -> 512 features, with LayerNorm after every layer when
    `norm` is `layer` (PQN, Gallici et al. 2024). `padding` `valid` is the Nature net's (7x7x64 into the dense
    layer); `same` pads each convolution as flax does (11x11x64), the network of Dopamine's JAX agents.
    uint8 frames are scaled by 1/255 here, so replay memories can keep them as bytes; float input is used as it
    is. Input arrives in the layout of the first convolution's weights (channels-last or not) in the same copy
    that converts the bytes."""

    out_features = 512

    def __init__(self, in_channels: int = 4, norm: str = "none", padding: str = "valid") -> None:
        super().__init__()
        if norm not in NORMS:
            raise UserError(unknown_name_message("norm", norm, list(NORMS)))
        if padding not in PADDINGS:
            raise UserError(unknown_name_message("padding", padding, list(PADDINGS)))

        def normed(*shape: int) -> list[nn.Module]:
            return [nn.LayerNorm(list(shape))] if norm == "layer" else []

        layers: list[nn.Module] = []
        # (left, right, top, bottom) zeros before each convolution; the first one's are applied in forward.
        # Even zeros on both sides are the convolution's own padding (a copy of the input less); an odd split
        # takes a ZeroPad2d, and an Identity holds its place otherwise, so checkpoints keep their keys.
        self.paddings: list[tuple[int, int, int, int]] = []
        size, channels = FRAME_SIZE, in_channels
        for index, (out_channels, kernel, stride) in enumerate(NATURE_CONVS):
            own = 0
            if padding == "same":
                size, before, after = same_padding(size, kernel, stride)
                self.paddings.append((before, after, before, after))
                own = before if before == after else 0
                if index > 0:
                    layers.append(nn.Identity() if own else nn.ZeroPad2d(self.paddings[-1]))
            else:
                size = (size - kernel) // stride + 1
                self.paddings.append((0, 0, 0, 0))
            layers += [nn.Conv2d(channels, out_channels, kernel, stride=stride, padding=own),
                       *normed(out_channels, size, size), nn.ReLU()]
            channels = out_channels
        self.layers = nn.Sequential(
            *layers, nn.Flatten(),
            nn.Linear(channels * size * size, self.out_features), *normed(self.out_features), nn.ReLU(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, C, 84, 84) frames, uint8 in [0, 255] or float in [0, 1] -> (B, 512)."""
        first, *rest = self.layers
        layout = torch.channels_last if is_channels_last(first.weight) else torch.contiguous_format
        weight = first.weight
        if obs.dtype == torch.uint8:
            # Bytes go straight to the dtype the convolution computes in (bfloat16 holds 0..255 exactly), and
            # the 1/255 into the first convolution's 8k weights instead of the 900k values of 32 frame stacks.
            device_type = obs.device.type
            dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else torch.float32
            obs, weight = obs.to(dtype, memory_format=layout), weight / 255.0
        else:
            obs = obs.contiguous(memory_format=layout)
        if any(self.paddings[0]) and not any(first.padding):
            obs = F.pad(obs, self.paddings[0])
        features = F.conv2d(obs, weight, first.bias, first.stride, first.padding)
        for layer in rest:
            features = layer(features)
        return features


class DuelingHead(nn.Module):
    """Wang et al. (2016): separate value and advantage streams, Q = V + A - mean(A). Each stream has a hidden
    layer of `hidden` units (Wang et al.'s 512), or none for `hidden=0`: two linear outputs on the shared
    features, as Dopamine's FullRainbowNetwork has them."""

    def __init__(self, in_features: int, num_actions: int, hidden: int = 512) -> None:
        super().__init__()

        def stream(outputs: int) -> nn.Module:
            if hidden == 0:
                return nn.Linear(in_features, outputs)
            return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

        self.value = stream(1)
        self.advantage = stream(num_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> (B, num_actions) Q-values."""
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)


class ConvEncoder28(nn.Module):
    """28x28 images -> features: two stride-2 convolutions (28 -> 14 -> 7) and a linear layer."""

    def __init__(self, out_features: int, channels: int = 1, activation: str = "relu") -> None:
        super().__init__()
        self.channels = channels
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1),
            make_activation(activation),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            make_activation(activation),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, out_features),
        )
        self.out_features = out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) or flat (B, C*784) images -> (B, out_features)."""
        if images.dim() == 2:
            images = images.reshape(images.shape[0], self.channels, 28, 28)
        return self.layers(images)


class ConvDecoder28(nn.Module):
    """Features -> (B, C, 28, 28) raw outputs (logits or means, no output activation): the encoder's mirror."""

    def __init__(self, in_features: int, channels: int = 1, activation: str = "relu") -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 64 * 7 * 7),
            make_activation(activation),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            make_activation(activation),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> (B, C, 28, 28)."""
        return self.layers(features)


INIT_SCHEMES = ("default", "orthogonal", "xavier_uniform", "kaiming_uniform", "kaiming_normal", "normal")
_WEIGHTED_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)


def init_weights(module: nn.Module, scheme: str = "default", gain: float = 1.0, std: float = 0.02,
                 bias: float = 0.0) -> nn.Module:
    """Initialise every linear and (transposed) conv layer of `module` in place and return `module`.

    `default` keeps torch's initialisation; every other scheme also sets biases to `bias`. `gain` is for
    orthogonal and xavier_uniform, `std` for normal (DCGAN's N(0, 0.02)); kaiming assumes ReLU.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(unknown_name_message("init scheme", scheme, list(INIT_SCHEMES)))
    if scheme == "default":
        return module
    for layer in module.modules():
        if not isinstance(layer, _WEIGHTED_LAYERS):
            continue
        if scheme == "orthogonal":
            nn.init.orthogonal_(layer.weight, gain=gain)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        elif scheme == "kaiming_normal":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            nn.init.normal_(layer.weight, 0.0, std)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias)
    return module
