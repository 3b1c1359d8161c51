"""PyTorch twins of minigrad's benchmark models, with the same architecture.

* ``resnet_cifar(depth)``: He et al. 2016, Sec. 4.2: a 3x3 conv to 16 channels,
  three stages of (depth − 2)/6 basic blocks at 16, 32, 64 channels (the first
  block of stages 2 and 3 has stride 2), option-A shortcuts (subsample and
  zero-pad channels), global average pool, Linear(64, 10).  Convs have no bias.
* ``vgg16_cifar()``: VGG configuration D's 13 3x3 convs (no bias) each followed
  by BatchNorm and ReLU, 2x2 max-pool after each stage, Linear(512, 10).

Used only to time PyTorch next to minigrad (``python -m benchmarks``).
"""
import torch
from torch import nn
import torch.nn.functional as F


class ZeroPadShortcut(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (ZeroPadShortcut(cin, cout, stride) if stride != 1 or cin != cout
                         else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet_cifar(depth):
    return ResNetCifar(depth)


VGG_D = [[64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3]


def vgg16_cifar(num_classes=10):
    layers, cin = [], 3
    for stage in VGG_D:
        for cout in stage:
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=False)]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(512, num_classes))


MODELS = {"resnet20": lambda: resnet_cifar(20), "resnet56": lambda: resnet_cifar(56),
          "vgg16_cifar": vgg16_cifar}
