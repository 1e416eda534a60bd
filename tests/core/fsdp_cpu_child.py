"""workers.train_child under FSDP on CPU processes (gloo), for tests/core/test_fsdp.py: a machine
without GPUs runs the same trainer code, torch FSDP and accelerate's FSDP preparation. Two shims,
both about the CPU only: accelerate turns FSDP on for GPU-type process groups alone, so this
process group (gloo, CPU) is declared as one; and gathering a full state dict with
offload_to_cpu=True (accelerate's setting, right on a GPU) crashes when the shards already live on
the CPU, so the gather here does not offload."""
import sys

import torch
import accelerate.state as state
from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig

_prepare_backend = state.PartialState._prepare_backend


def _gloo_as_gpu_group(self, cpu=False, sagemaker_dp=False, backend=None):
    _prepare_backend(self, cpu=True, sagemaker_dp=sagemaker_dp, backend=backend)
    return "gloo", state.DistributedType.MULTI_GPU


def _cpu_device(self):
    if self.device is None:
        self.device = torch.device("cpu")


state.PartialState._prepare_backend = _gloo_as_gpu_group
state.PartialState.set_device = _cpu_device
for config in (FullStateDictConfig, FullOptimStateDictConfig):
    def _no_offload(self, *args, _init=config.__init__, **kwargs):
        _init(self, *args, **kwargs)
        self.offload_to_cpu = False
    config.__init__ = _no_offload

from workers.train_child import main  # noqa: E402 - after the shims

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
