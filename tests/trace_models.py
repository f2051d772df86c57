"""Small models named by ``package.module:function`` in tests (tests/ is on sys.path under pytest):
``trace_models:tiny_cnn`` for ``slimnet trace`` and model sources."""
import torch
import torch.nn as nn


class TinyCNN(nn.Module):
    """A stem, a residual block and a classifier: 3 slimmable groups (stem + block output, the
    block's inner width, nothing else), input and classifier fixed."""

    def __init__(self, num_classes=10, in_channels=3, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width)
        self.conv2, self.bn2 = nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


def tiny_cnn(num_classes=10, in_channels=3, width=16):
    torch.manual_seed(0)
    return TinyCNN(num_classes, in_channels, width)


class Gate(nn.Module):
    def forward(self, x):
        return x if x.mean() > 0 else -x          # data-dependent control flow: fx cannot trace it


class GatedCNN(TinyCNN):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__(num_classes, in_channels)
        self.gate = Gate()

    def forward(self, x):
        return self.fc(self.gate(self.stem(x)).mean((2, 3)))


def gated_cnn(num_classes=10, in_channels=3):
    torch.manual_seed(0)
    return GatedCNN(num_classes, in_channels)
