"""Shared test settings."""
import torch

# One intra-op thread: the tests use tiny tensors, and several pytest processes often share a
# few cores; more threads than free cores makes OpenMP spin-wait and slows everything down.
torch.set_num_threads(1)
